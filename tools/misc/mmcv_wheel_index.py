"""Where ``tools/install.sh`` can get a prebuilt mmcv 2.1.0 with ops.

    python tools/misc/mmcv_wheel_index.py            # the installed torch
    python tools/misc/mmcv_wheel_index.py --torch 2.1.2+cu121 --cuda 12.1 \\
        --python 3.10

Prints OpenMMLab's find-links index holding an mmcv 2.1.0 wheel for that
torch / CUDA / Python (what ``mim install mmcv==2.1.0`` resolves), or
``build`` when OpenMMLab publishes none and mmcv must be compiled.
Imports torch only to describe the installed one.
"""
import argparse
import sys

MMCV_VERSION = '2.1.0'
INDEX = ('https://download.openmmlab.com/mmcv/dist/{device}/torch{torch}/'
         'index.html')
# The torch / device pairs OpenMMLab built mmcv 2.1.0 for, among the torch
# versions mmgcvit supports (2.1+), and the CPython versions of those
# wheels.
PREBUILT = {'2.1': ('cu118', 'cu121', 'cpu')}
PYTHONS = ('3.8', '3.9', '3.10', '3.11')


def wheel_index(torch_version, cuda_version, python_version):
    """The index URL for ``torch_version`` (e.g. ``2.1.2+cu121``) built for
    CUDA ``cuda_version`` (e.g. ``12.1``; None for a CPU build) under
    Python ``python_version`` (e.g. ``3.10``), or None."""
    torch_minor = '.'.join(torch_version.split('+')[0].split('.')[:2])
    device = ('cu' + ''.join(cuda_version.split('.')[:2])
              if cuda_version else 'cpu')
    if python_version not in PYTHONS or \
            device not in PREBUILT.get(torch_minor, ()):
        return None
    return INDEX.format(device=device, torch=torch_minor)


def installed():
    """``(torch version, CUDA version or None, Python version)`` here."""
    import torch
    return (torch.__version__, torch.version.cuda,
            '.'.join(map(str, sys.version_info[:2])))


def main():
    parser = argparse.ArgumentParser(
        description=f'OpenMMLab index of a prebuilt mmcv {MMCV_VERSION}, or '
        '"build"')
    parser.add_argument('--torch', help='torch version, e.g. 2.1.2+cu121 '
                        '(default: the installed torch and its CUDA)')
    parser.add_argument('--cuda', help='CUDA version torch was built with, '
                        'e.g. 12.1; omit for a CPU build')
    parser.add_argument('--python', help='e.g. 3.10 (default: this one)')
    args = parser.parse_args()
    if not args.torch and (args.cuda or args.python):
        parser.error('--cuda and --python describe the torch of --torch: '
                     'pass --torch too')
    if args.torch:
        versions = (args.torch, args.cuda, args.python
                    or '.'.join(map(str, sys.version_info[:2])))
    else:
        versions = installed()
    print(wheel_index(*versions) or 'build')


if __name__ == '__main__':
    main()

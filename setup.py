import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_requirements(name):
    """Requirement lines of ``requirements/<name>.txt`` (one source of truth
    shared with ``tools/install.sh``)."""
    with open(os.path.join(ROOT, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    scope = {}
    with open(os.path.join(ROOT, 'mmgcvit', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


class BuildPyWithConfigs(build_py):
    """Ship configs/ inside the package as ``mmgcvit/.mim/configs``.

    That is where mmengine's ``pkg::path`` config syntax and ``mim`` look for
    a package's configs, so ``pip install .`` (not only ``-e``) can serve
    ``_base_ = 'mmgcvit::detection/...'`` to downstream repos.
    """

    def run(self):
        super().run()
        dst = os.path.join(self.build_lib, 'mmgcvit', '.mim', 'configs')
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, 'configs'), dst)


setup(
    name='mmgcvit',
    version=read_version(),
    description='GC ViT (Global Context Vision Transformer) backbone for '
    'MMDetection 3.x and MMSegmentation 1.x',
    long_description=open(os.path.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.8',
    packages=find_packages(include=['mmgcvit', 'mmgcvit.*']),
    cmdclass={'build_py': BuildPyWithConfigs},
    install_requires=read_requirements('runtime'),
    extras_require={'tests': read_requirements('tests')},
    zip_safe=False,
)

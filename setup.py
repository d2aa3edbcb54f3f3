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


# Imported at interpreter start (see the module): lets configs anywhere
# inherit ours with `_base_ = 'mmgcvit::detection/...'`.
CONFIG_HOOK = 'mmgcvit_config_hook'
# What ships in mmgcvit/.mim, where mmengine's `pkg::path` config syntax and
# `mim` look (as mmdet and mmseg ship theirs): configs with their metafiles,
# the model index they start from, and the tools, for downstream repos
# without a checkout of ours.
MIM_FILES = ('configs', 'model-index.yml', 'tools')


class BuildPyWithMim(build_py):
    """Also install ``mmgcvit/.mim`` and the config hook's ``.pth``.

    A wheel gets copies. An editable install (``pip install -e .``) gets
    ``mmgcvit/.mim`` as links into the checkout, so edited configs take
    effect at once, and its ``.pth`` is written straight into the editable
    wheel, which is all setuptools installs from it.
    """

    def run(self):
        super().run()
        pth = f'{CONFIG_HOOK}.pth'
        if self.editable_mode:
            self._link_mim(os.path.join(ROOT, 'mmgcvit', '.mim'))
            wheel_root = self.get_finalized_command('install').install_lib
            self._write_pth(os.path.join(wheel_root, pth))
            return
        mim = os.path.join(self.build_lib, 'mmgcvit', '.mim')
        shutil.rmtree(mim, ignore_errors=True)
        os.makedirs(mim)
        for name in MIM_FILES:
            src = os.path.join(ROOT, name)
            if os.path.isdir(src):
                shutil.copytree(
                    src, os.path.join(mim, name),
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copy2(src, mim)
        self._write_pth(os.path.join(self.build_lib, pth))

    @staticmethod
    def _link_mim(mim):
        os.makedirs(mim, exist_ok=True)
        for name in MIM_FILES:
            link = os.path.join(mim, name)
            if os.path.islink(link):
                os.unlink(link)
            os.symlink(os.path.join('..', '..', name), link)

    @staticmethod
    def _write_pth(path):
        with open(path, 'w') as f:
            f.write(f'import {CONFIG_HOOK}\n')


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
    py_modules=[CONFIG_HOOK],
    cmdclass={'build_py': BuildPyWithMim},
    install_requires=read_requirements('runtime'),
    extras_require={
        name: read_requirements(name) for name in ('tests', 'deploy')},
    zip_safe=False,
)

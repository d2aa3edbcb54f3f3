"""Lets any mmengine config inherit ours: ``_base_ = 'mmgcvit::...'``.

mmengine resolves ``pkg::path`` bases only for the packages listed in its
``MODULE2PACKAGE`` table, reads them from ``<package>/.mim/configs`` and
tags the dicts they define with ``_scope_=pkg``. It resolves bases before a
config's ``custom_imports`` run, so ``import mmgcvit`` would come too late.

``mmgcvit_config_hook.pth``, installed next to this module in
site-packages, imports it at interpreter start. It then only waits for
``mmengine.config.config`` to be imported (no torch or mmengine import of
its own, so starting Python stays cheap) and patches that module:

* ``mmgcvit`` joins ``MODULE2PACKAGE``;
* mmgcvit's folder is where Python imports it from: mmengine's lookup by
  distribution location points into site-packages, where an editable
  install (``pip install -e .``) has no package folder;
* ``mmgcvit::`` bases get no scope, as relative bases: ``mmgcvit`` is no
  registry scope, and our configs set ``default_scope`` (mmdet or mmseg)
  themselves.
"""
import sys

PACKAGE = 'mmgcvit'
TARGET = 'mmengine.config.config'


def patch_mmengine_config(config_module):
    """Teach an imported ``mmengine.config.config`` the ``mmgcvit::``
    prefix."""
    import os.path as osp
    from importlib.util import find_spec

    from mmengine.config import utils

    utils.MODULE2PACKAGE[PACKAGE] = PACKAGE

    installed_path = config_module.get_installed_path

    def get_installed_path(package):
        spec = find_spec(PACKAGE) if package == PACKAGE else None
        if spec is None or spec.origin is None:
            return installed_path(package)
        return osp.dirname(spec.origin)

    get_cfg_path = config_module.Config._get_cfg_path

    def _get_cfg_path(cfg_path, filename):
        path, scope = get_cfg_path(cfg_path, filename)
        return path, None if scope == PACKAGE else scope

    config_module.get_installed_path = get_installed_path
    config_module.Config._get_cfg_path = staticmethod(_get_cfg_path)


class _PatchingLoader:
    """Runs the real loader, then patches the module it executed."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        # get_source, get_filename, ...: tracebacks and inspect still work.
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        patch_mmengine_config(module)


class ConfigHookFinder:
    """``sys.meta_path`` entry that only acts on ``mmengine.config.config``
    and leaves finding it to the other finders."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path.remove(cls)
        from importlib.util import find_spec
        spec = find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def install():
    if TARGET in sys.modules:
        patch_mmengine_config(sys.modules[TARGET])
    elif ConfigHookFinder not in sys.meta_path:
        sys.meta_path.insert(0, ConfigHookFinder)


install()

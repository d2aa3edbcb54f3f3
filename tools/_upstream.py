"""What ``tools/train.py`` and ``tools/test.py`` share: mmdet's or mmseg's
own script of the same name (the config's ``default_scope`` picks), with
our one-line errors instead of tracebacks; all else comes from the
components the configs select, so the upstream tools get it too."""
import importlib
import os.path as osp
import runpy
import sys

from mmengine.config import Config

from mmgcvit.engine import PreflightError, one_line_errors


def run_upstream_tool(name, argv=None):
    """Run ``<library>/.mim/tools/<name>`` as ``__main__`` with ``argv``
    (default: this process's arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    prog = f'tools/{name}'
    with one_line_errors(prog):
        scope = 'mmdet'  # for --help and usage errors: mmdet's flags
        if argv and not argv[0].startswith('-'):
            if not osp.isfile(argv[0]):
                raise PreflightError(
                    f'config file {argv[0]!r} does not exist: pass the path '
                    'of an mmdet/mmseg config, e.g. configs/detection/...')
            scope = Config.fromfile(argv[0]).get('default_scope', 'mmdet')
        library = importlib.import_module(scope)
        script = osp.join(osp.dirname(library.__file__), '.mim', 'tools', name)
        sys.argv = [prog, *argv]
        runpy.run_path(script, run_name='__main__')

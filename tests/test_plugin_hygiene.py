"""What ``import mmgcvit`` does to the process (in a fresh one), and how
the package and the tests are put together: no patches of other libraries
in ``mmgcvit/`` or ``tools/``, no import cycles, no test module importing
another. (That every config selects our components: test_configs.py.)
"""
import ast
import graphlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

# --- what import mmgcvit loads and registers ---------------------------------

# What ``import mmgcvit`` may load: the registry, the model, the checkpoint
# reader (no pycocotools, dataset tooling, engine or analysis modules).
AT_IMPORT = ('mmgcvit.registry', 'mmgcvit.version', 'mmgcvit.models',
             'mmgcvit.checkpoint', 'mmgcvit.utils')

# Runs `import mmgcvit` between two looks at mmengine's root registries and
# at the modules loaded, then loads one of our configs.
REGISTRIES = '''
import json, sys
import mmcv.cnn, mmengine.runner  # their own registrations, made on import
from mmengine.registry import HOOKS, LOOPS
from mmengine.fileio.backends.registry_utils import backends
roots = dict(HOOKS=HOOKS, LOOPS=LOOPS)
before = {name: set(r._module_dict) for name, r in roots.items()}
import mmgcvit
gained = {name: sorted(set(r._module_dict) - before[name])
          for name, r in roots.items()}
loaded = sorted(m for m in sys.modules if m.startswith(('pycocotools',
                                                        'mmgcvit.')))
backend_at_import = 'mmgcvit_atomic' in backends
from mmengine.config import Config
Config.fromfile('configs/segmentation/upernet_gcvit-t_custom-seg.py')
print(json.dumps(dict(gained=gained, loaded=loaded,
                      backend_at_import=backend_at_import,
                      backend=backends.get('mmgcvit_atomic').__name__)))
'''


def test_import_loads_the_backbone_and_registers_nothing_into_mmengine():
    """Loading a config registers the file backend. (mmdet's and mmseg's
    own train.py build our hooks and loops by their ``mmgcvit.`` names in
    test_detection_e2e.py and test_segmentation_e2e.py.)"""
    result = subprocess.run([sys.executable, '-c', REGISTRIES], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    assert [m for m in found['loaded'] if not m.startswith(AT_IMPORT)] == []
    assert 'mmgcvit.models.backbones.gcvit' in found['loaded']
    assert found['gained'] == dict(HOOKS=[], LOOPS=[])
    assert not found['backend_at_import']
    assert found['backend'] == 'AtomicLocalBackend'


# --- no patches of other libraries ---------------------------------------


def _imported_objects(tree, package):
    """{name: object} of what a module's imports from outside ``package``
    bind."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith(package):
                    module = importlib.import_module(alias.name)
                    bound[alias.asname or alias.name.split('.')[0]] = (
                        module if alias.asname else
                        importlib.import_module(alias.name.split('.')[0]))
        elif isinstance(node, ast.ImportFrom) and not node.level and \
                not node.module.startswith(package):
            module = importlib.import_module(node.module)
            for alias in node.names:
                bound[alias.asname or alias.name] = getattr(
                    module, alias.name, None) or importlib.import_module(
                        f'{node.module}.{alias.name}')
    return bound


def library_patch_sites(root, package):
    """(object, attribute, 'file:line') of each assignment to, or deletion
    of, an attribute of something a module of ``package`` imports from
    outside it: ``LocalBackend.put = ...``, ``del module.open``."""
    sites = []
    for path in sorted(Path(root).rglob('*.py')):
        tree = ast.parse(path.read_text(), str(path))
        bound = _imported_objects(tree, package)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            else:
                continue
            for target in targets:
                for item in getattr(target, 'elts', [target]):
                    if not isinstance(item, ast.Attribute):
                        continue
                    chain, base = [], item.value
                    while isinstance(base, ast.Attribute):
                        chain.insert(0, base.attr)
                        base = base.value
                    if isinstance(base, ast.Name) and base.id in bound:
                        owner = bound[base.id]
                        for name in chain:
                            owner = getattr(owner, name)
                        sites.append((owner, item.attr,
                                      f'{path.name}:{node.lineno}'))
    return sites


def test_patch_walk_finds_assignments(tmp_path):
    """The walker itself, on a module that patches mmengine twice."""
    (tmp_path / 'pkg').mkdir()
    (tmp_path / 'pkg' / 'bad.py').write_text(
        'import mmengine.hooks.checkpoint_hook as hook_module\n'
        'from mmengine.fileio.backends import LocalBackend\n'
        'LocalBackend.put = None\n'
        'del hook_module.open\n')
    from mmengine.fileio.backends import LocalBackend
    import mmengine.hooks.checkpoint_hook as hook_module
    sites = library_patch_sites(tmp_path / 'pkg', 'pkg')
    assert [(owner, attribute) for owner, attribute, _ in sites] == [
        (LocalBackend, 'put'), (hook_module, 'open')]


# Whose objects the rule covers (the tools set sys.argv for the upstream
# scripts they run).
LIBRARIES = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'torch', 'numpy')


def _library(owner):
    module = owner.__name__ if isinstance(owner, type(sys)) else getattr(
        owner, '__module__', '')
    return (module or '').split('.')[0]


@pytest.mark.parametrize('folder, package', [('mmgcvit', 'mmgcvit'),
                                             ('tools', 'mmgcvit')])
def test_no_library_patches(folder, package, monkeypatch):
    """Everything we add is a component a config selects (issue 24)."""
    monkeypatch.syspath_prepend(str(REPO / folder))  # the tools' _upstream
    sites = library_patch_sites(REPO / folder, package)
    assert [f'{where}: {getattr(owner, "__name__", owner)}.{attribute}'
            for owner, attribute, where in sites
            if _library(owner) in LIBRARIES] == []


# --- import structure --------------------------------------------------------


def module_names(root, package):
    """{dotted module name: file} of the package folder ``root``."""
    names = {}
    for path in sorted(Path(root).rglob('*.py')):
        parts = list(path.relative_to(Path(root).parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        names['.'.join(parts)] = path
    assert package in names, f'{root} has no __init__.py'
    return names


def imported_modules(name, path, modules):
    """The modules of ``modules`` that module ``name`` (file ``path``)
    imports anywhere in its code, functions included: ``import a.b``,
    ``from a import b`` (the submodule ``a.b`` if there is one, else
    ``a``) and relative imports."""
    is_package = path.name == '__init__.py'
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                package = name.split('.')
                if not is_package:
                    package.pop()
                package = package[:len(package) - node.level + 1]
                base = '.'.join(package + ([base] if base else []))
            targets = [f'{base}.{alias.name}'
                       if f'{base}.{alias.name}' in modules else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules)
    return found


def import_cycle(root, package):
    """A cycle of imports among the modules of ``root`` (its first module
    repeated at its end), or None if there is none."""
    modules = module_names(root, package)
    try:
        graphlib.TopologicalSorter({
            name: imported_modules(name, path, modules)
            for name, path in modules.items()}).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_import_walk_finds_cycles(tmp_path):
    """The walker itself: a cycle through a relative import, a
    ``from package import submodule`` and a function-level import."""
    package = tmp_path / 'pkg'
    (package / 'sub').mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'a.py').write_text('from . import b\n')
    (package / 'b.py').write_text('def f():\n    from pkg.sub import c\n')
    (package / 'sub' / '__init__.py').write_text('')
    (package / 'sub' / 'c.py').write_text('from ..a import x\n')
    (package / 'leaf.py').write_text('import pkg.a\nimport os\n')
    cycle = import_cycle(package, 'pkg')
    # graphlib walks it from where it entered it, against the imports.
    start = cycle.index('pkg.a')
    assert cycle[start:] + cycle[1:start + 1] == [
        'pkg.a', 'pkg.sub.c', 'pkg.b', 'pkg.a']


def test_mmgcvit_has_no_import_cycles():
    cycle = import_cycle(REPO / 'mmgcvit', 'mmgcvit')
    assert cycle is None, ' <- '.join(cycle)


def test_no_test_module_imports_another():
    """Shared test code lives in ``helpers.py`` (and fixtures in
    ``conftest.py``), never in a test module another one imports."""
    modules = {p.stem: p for p in Path(__file__).parent.glob('*.py')}
    offenders = [f'{path.name} imports {name}'
                 for module, path in modules.items()
                 for name in imported_modules(module, path, modules)
                 if name.startswith('test_') or name == 'conftest']
    assert offenders == []

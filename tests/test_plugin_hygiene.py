"""What ``import mmgcvit`` and our configs do to the process, and how the
package and the tests are put together.

- ``import mmgcvit`` loads only the backbone, the checkpoint reader and the
  registry (no pycocotools, dataset tooling, engine or analysis modules)
  and registers nothing into mmengine's registries; the engine components
  resolve by their ``mmgcvit.`` names through mmdet's and mmseg's
  registries, and loading one of our configs registers the atomic file
  backend its checkpoint hook names.
- Nothing in ``mmgcvit/`` or ``tools/`` assigns or deletes an attribute of
  another library's objects (``conftest.py`` checks after every test that
  none was left replaced).
- No module of ``mmgcvit`` imports one that imports it back; no test module
  imports another.
"""
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

# --- what import mmgcvit loads and registers ---------------------------------

IMPORTED_BY_MMGCVIT = [
    'mmgcvit',
    'mmgcvit.checkpoint',
    'mmgcvit.checkpoint.download',
    'mmgcvit.checkpoint.loading',
    'mmgcvit.checkpoint.reader',
    'mmgcvit.models',
    'mmgcvit.models.backbones',
    'mmgcvit.models.backbones.biased_attention',
    'mmgcvit.models.backbones.gcvit',
    'mmgcvit.models.backbones.gcvit_arch',
    'mmgcvit.models.backbones.gcvit_converter',
    'mmgcvit.models.backbones.window_attention',
    'mmgcvit.registry',
    'mmgcvit.utils',
    'mmgcvit.utils.fileio',
    'mmgcvit.utils.torch_compat',
    'mmgcvit.version',
]
# Modules that are the tools' business, not a config's custom_imports'.
NOT_AT_IMPORT = ('pycocotools', 'mmgcvit.dataset_tools', 'mmgcvit.engine',
                 'mmgcvit.analysis')

LIST_MODULES = ("import mmgcvit, sys; print(sorted(m for m in sys.modules if "
                "m.startswith(('pycocotools', 'mmgcvit'))))")

# Runs `import mmgcvit` between two looks at mmengine's root registries,
# then looks our components up through mmdet's and mmseg's registries, and
# loads one of our configs.
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
engine_at_import = 'mmgcvit.engine' in sys.modules
backend_at_import = 'mmgcvit_atomic' in backends
import mmdet.registry, mmseg.registry
resolved = {}
for library in (mmdet.registry, mmseg.registry):
    for registry, name in ((library.HOOKS, 'AtomicCheckpointHook'),
                           (library.HOOKS, 'RNGStateHook'),
                           (library.LOOPS, 'ResumableEpochBasedTrainLoop')):
        cls = registry.get(f'mmgcvit.{name}')
        resolved[f'{library.__name__}.{registry.name}:{name}'] = (
            None if cls is None else f'{cls.__module__}.{cls.__qualname__}')
from mmengine.config import Config
Config.fromfile('configs/segmentation/upernet_gcvit-t_custom-seg.py')
print(json.dumps(dict(gained=gained, engine_at_import=engine_at_import,
                      backend_at_import=backend_at_import, resolved=resolved,
                      backend=backends.get('mmgcvit_atomic').__name__)))
'''


def python(code):
    """stdout of ``python -c code`` in a fresh interpreter, run from the
    checkout."""
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_loads_only_the_backbone_modules():
    modules = python(LIST_MODULES).strip()
    loaded = ast.literal_eval(modules)
    assert not [m for m in loaded if m.startswith(NOT_AT_IMPORT)], modules
    # The .pth start-up hook of an installed mmgcvit (mmgcvit::
    # config bases) is in every process of that Python, mmgcvit or not.
    hook = ['mmgcvit_config_hook'] if 'mmgcvit_config_hook' in \
        sys.modules else []
    assert loaded == sorted(IMPORTED_BY_MMGCVIT + hook)


@pytest.fixture(scope='module')
def fresh_registries():
    return json.loads(python(REGISTRIES).splitlines()[-1])


def test_import_registers_nothing_into_mmengine(fresh_registries):
    assert fresh_registries['gained'] == dict(HOOKS=[], LOOPS=[])
    assert not fresh_registries['engine_at_import']
    assert not fresh_registries['backend_at_import']


def test_loading_a_config_registers_the_atomic_backend(fresh_registries):
    assert fresh_registries['backend'] == 'AtomicLocalBackend'


def test_engine_components_resolve_through_downstream_registries(
        fresh_registries):
    expected = {
        'AtomicCheckpointHook':
        'mmgcvit.engine.checkpoint_writes.AtomicCheckpointHook',
        'RNGStateHook': 'mmgcvit.engine.resume.RNGStateHook',
        'ResumableEpochBasedTrainLoop':
        'mmgcvit.engine.resume.ResumableEpochBasedTrainLoop',
    }
    resolved = fresh_registries['resolved']
    assert len(resolved) == 2 * len(expected), resolved
    for key, cls in resolved.items():
        assert key.startswith(('mmdet.registry.', 'mmseg.registry.'))
        assert cls == expected[key.split(':')[1]], key


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


def import_cycles(root, package):
    """Each cycle of imports among the modules of ``root``, as a list of
    names from a module back to itself (one per strongly connected set)."""
    modules = module_names(root, package)
    graph = {name: sorted(imported_modules(name, path, modules))
             for name, path in modules.items()}
    # Tarjan's strongly connected components.
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = set()
            while node not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        start = min(component)
        if len(component) > 1 or start in graph[start]:
            cycles.append(_path_back(graph, component, start))
    return cycles


def _path_back(graph, component, start):
    """A path of imports from ``start`` back to it inside ``component``."""
    paths = [[start]]
    seen = set()
    while paths:
        path = paths.pop(0)
        for child in graph[path[-1]]:
            if child == start:
                return path + [start]
            if child in component and child not in seen:
                seen.add(child)
                paths.append(path + [child])
    raise AssertionError(f'no cycle through {start}')


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
    assert import_cycles(package, 'pkg') == [
        ['pkg.a', 'pkg.b', 'pkg.sub.c', 'pkg.a']
    ]


def test_mmgcvit_has_no_import_cycles():
    cycles = import_cycles(REPO / 'mmgcvit', 'mmgcvit')
    assert cycles == [], '\n'.join(' -> '.join(c) for c in cycles)


def test_no_test_module_imports_another():
    """Shared test code lives in ``helpers.py`` (and fixtures in
    ``conftest.py``), never in a test module another one imports."""
    tests = Path(__file__).parent
    test_modules = {p.stem for p in tests.glob('test_*.py')} | {'conftest'}
    offenders = []
    for path in sorted(tests.glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or '']
                if node.level:  # from . import test_x
                    names += [alias.name for alias in node.names]
            else:
                continue
            offenders += [f'{path.name} imports {name}' for name in names
                          if name.split('.')[0] in test_modules]
    assert offenders == []


# --- what the configs select ------------------------------------------------

@pytest.mark.parametrize(
    'config', sorted(str(p.relative_to(REPO))
                     for p in (REPO / 'configs').glob('*/*.py')))
def test_every_config_selects_our_components(config):
    """What any tool then gets (README, "What our configs add")."""
    from mmengine.config import Config
    cfg = Config.fromfile(REPO / config, import_custom_modules=False)
    assert cfg.custom_imports.imports == ['mmgcvit', 'mmgcvit.engine']
    assert cfg.train_cfg.type in ('mmgcvit.ResumableEpochBasedTrainLoop',
                                  'mmgcvit.ResumableIterBasedTrainLoop')
    assert cfg.test_cfg.type == 'mmgcvit.PreflightTestLoop'
    assert cfg.default_hooks.checkpoint.type == 'mmgcvit.AtomicCheckpointHook'
    assert cfg.default_hooks.checkpoint.backend_args == dict(
        backend='mmgcvit_atomic')
    assert [h['type'] for h in cfg.custom_hooks] == [
        'mmgcvit.RNGStateHook', 'mmgcvit.PlainCheckpointHook',
        'mmgcvit.LoadReportHook', 'mmgcvit.TestMetricsHook']
    assert cfg.optim_wrapper.type == 'OptimWrapper'

"""The layers of module_utils and the doors between them.

_qcow2 (the engine) imports neither Ansible nor the other layers; everything outside the engine reaches it
through _qcow2/api.py only, and uses only what api.__all__ names; _live (libvirt) never imports _module; _backup
(the backup store) imports only the engine.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PLUGINS = REPO / 'plugins'
PACKAGE = 'ansible_collections.backingchain.qcow2.plugins.module_utils.'
ENGINE = PACKAGE + '_qcow2'


def _imports(path):
    """(line, module, names imported from it, the name it is bound to) of each import of a file; relative imports
    resolved against the file's package."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    package = 'ansible_collections.backingchain.qcow2.' + '.'.join(path.relative_to(REPO).parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, [], alias.asname or alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ''
            if node.level:
                parts = package.split('.')
                module = '.'.join(parts[:len(parts) - node.level + 1] + ([module] if module else []))
            found.append((node.lineno, module, [alias.name for alias in node.names], None))
    return tree, found


def _outside_the_engine():
    engine = PLUGINS / 'module_utils' / '_qcow2'
    return [p for p in sorted(PLUGINS.rglob('*.py')) if engine not in p.parents]


def test_nothing_outside_the_engine_reaches_past_its_api():
    api_names = set(importlib.import_module(ENGINE + '.api').__all__)
    problems = []
    for path in _outside_the_engine():
        tree, imports = _imports(path)
        bound_to_api = set()
        for line, module, names, _bound in imports:
            where = '%s:%d' % (path.relative_to(REPO), line)
            if module == ENGINE:
                problems += ['%s imports %s from the engine package' % (where, name) for name in names if name != 'api']
                bound_to_api.update(name for name in names if name == 'api')
            elif module == ENGINE + '.api':
                problems += ['%s imports %s, which api.__all__ does not name' % (where, name)
                             for name in names if name not in api_names]
            elif module.startswith(ENGINE + '.'):
                problems.append('%s imports the engine internal %s' % (where, module))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound_to_api
                    and node.attr not in api_names):
                problems.append('%s:%d uses api.%s, which api.__all__ does not name'
                                % (path.relative_to(REPO), node.lineno, node.attr))
    assert problems == []


def test_the_engine_imports_neither_ansible_nor_the_other_layers():
    problems = []
    for path in sorted((PLUGINS / 'module_utils' / '_qcow2').rglob('*.py')):
        for line, module, _names, _bound in _imports(path)[1]:
            if module.startswith('ansible') and not module.startswith(ENGINE):
                problems.append('%s:%d imports %s' % (path.relative_to(REPO), line, module))
    assert problems == []


def test_the_live_layer_does_not_import_the_module_layer():
    problems = []
    for path in sorted((PLUGINS / 'module_utils' / '_live').rglob('*.py')):
        for line, module, _names, _bound in _imports(path)[1]:
            if module.startswith(PACKAGE + '_module'):
                problems.append('%s:%d imports %s' % (path.relative_to(REPO), line, module))
    assert problems == []


def test_the_backup_store_imports_only_the_engine():
    """_backup runs wherever the engine runs (a live flow feeds it too): no Ansible, no _module, no _live."""
    problems = []
    for path in sorted((PLUGINS / 'module_utils' / '_backup').rglob('*.py')):
        for line, module, _names, _bound in _imports(path)[1]:
            if module.startswith('ansible.') or module.startswith(PACKAGE + '_module') or module.startswith(PACKAGE + '_live'):
                problems.append('%s:%d imports %s' % (path.relative_to(REPO), line, module))
    assert problems == []


def test_every_name_api_exports_exists():
    api = importlib.import_module(ENGINE + '.api')
    assert [name for name in api.__all__ if not hasattr(api, name)] == []

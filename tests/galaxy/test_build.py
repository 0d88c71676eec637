"""What `ansible-galaxy collection build` ships, and what it leaves out."""

from __future__ import annotations

import ast
import json
import tarfile

import pytest

from .conftest import GALAXY, REPO


@pytest.fixture(scope='module')
def shipped(collection_tarball) -> set[str]:
    with tarfile.open(collection_tarball) as tar:
        return {member.name for member in tar.getmembers()}


@pytest.mark.parametrize('path', [
    'requirements.txt', 'bindep.txt', 'meta/execution-environment.yml', 'meta/runtime.yml',
    'CHANGELOG.rst', 'CHANGELOG.md', 'CONTRIBUTING.md', 'README.md', 'COPYING', 'LICENSES/GPL-3.0-or-later.txt',
    'docs/docsite/extra-docs.yml', 'docs/docsite/links.yml',
    'tests/config.yml', 'tests/unit/requirements.txt', 'tests/integration/targets/qcow2_image/aliases',
])
def test_ships_what_users_and_ansible_test_need(shipped, path):
    assert path in shipped


@pytest.mark.parametrize('prefix', [
    '.gitignore', 'tests/fuzz', 'tests/live', 'tests/fleet', 'tests/galaxy', 'tests/browser', 'tests/output',
    'docs/reference', 'scripts', 'bench', '.venv', '.ci',
])
def test_leaves_out_what_users_cannot_run(shipped, prefix):
    assert not [name for name in shipped if name == prefix or name.startswith(prefix + '/')]


def test_manifest_has_homepage_and_a_contact(collection_tarball):
    with tarfile.open(collection_tarball) as tar:
        info = json.load(tar.extractfile('MANIFEST.json'))['collection_info']
    assert info['homepage'] == GALAXY['homepage'] and info['homepage'].startswith('https://')
    assert info['authors'] and all('@' in author or 'https://' in author for author in info['authors'])


def _collection_imports(source: str) -> set[str]:
    """Dotted names below the collection that a Python file imports."""
    prefix = 'ansible_collections.%s.%s.' % (GALAXY['namespace'], GALAXY['name'])
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            names.add(node.module[len(prefix):])
        elif isinstance(node, ast.Import):
            names.update(alias.name[len(prefix):] for alias in node.names if alias.name.startswith(prefix))
    return names


def test_shipped_tests_import_only_shipped_code(shipped):
    """ansible-test units must run from the tarball: nothing it imports may be build-ignored."""
    missing = set()
    for name in sorted(shipped):
        if name.startswith('tests/') and name.endswith('.py'):
            for module in _collection_imports((REPO / name).read_text()):
                path = module.replace('.', '/')
                if path + '.py' not in shipped and path + '/__init__.py' not in shipped and path not in shipped:
                    missing.add('%s imports %s' % (name, module))
    assert not missing

"""The collection as a user gets it: built with ansible-galaxy, installed from the tarball."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GALAXY = yaml.safe_load((REPO / 'galaxy.yml').read_text())
FQCN = '%s.%s' % (GALAXY['namespace'], GALAXY['name'])


def venv_tool(name: str) -> str:
    """A console script of the Python running the tests (the project's .venv)."""
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope='session')
def collection_tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('build')
    subprocess.run([venv_tool('ansible-galaxy'), 'collection', 'build', '--output-path', str(out), str(REPO)],
                   check=True, capture_output=True, text=True)
    tarball = out / ('%s-%s-%s.tar.gz' % (GALAXY['namespace'], GALAXY['name'], GALAXY['version']))
    assert tarball.is_file(), sorted(p.name for p in out.iterdir())
    return tarball


@pytest.fixture(scope='session')
def installed_collections(tmp_path_factory, collection_tarball) -> Path:
    """A collections path holding only the installed tarball."""
    root = tmp_path_factory.mktemp('collections')
    subprocess.run([venv_tool('ansible-galaxy'), 'collection', 'install', '--offline', '-p', str(root),
                    str(collection_tarball)], check=True, capture_output=True, text=True)
    return root


@pytest.fixture(scope='session')
def installed_collection(installed_collections) -> Path:
    return installed_collections / 'ansible_collections' / GALAXY['namespace'] / GALAXY['name']

"""The README's install path, as a new user follows it on a fresh machine.

A fresh virtual environment gets ansible-core and requirements.txt and nothing else; the collection is
installed from the built tarball into a collections path of its own; the README's quick-start playbook runs
against localhost twice (the second run changes nothing) and leaves the backup it promises.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

ANSIBLE_CORE = 'ansible-core>=2.19,<2.20'  # the controller's version (requirements-dev.txt)


def quick_start_playbook() -> str:
    readme = (REPO / 'README.md').read_text()
    section = readme.split('\n## Quick start\n', 1)[1].split('\n## ', 1)[0]
    return re.search(r'```yaml\n(.*?)```', section, re.S).group(1)


@pytest.fixture(scope='module')
def fresh_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp('user') / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                    ANSIBLE_CORE, '-r', str(REPO / 'requirements.txt')], check=True, capture_output=True)
    return venv


def user_env(venv: Path, collections: Path) -> dict[str, str]:
    """A user's shell: the fresh venv first on PATH, no trace of the project's .venv or Ansible settings."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(('ANSIBLE_', 'PYTHON', 'VIRTUAL_ENV'))}
    path = [entry for entry in env.get('PATH', '').split(os.pathsep) if not entry.startswith(str(REPO))]
    env.update(PATH=os.pathsep.join([str(venv / 'bin')] + path), ANSIBLE_COLLECTIONS_PATH=str(collections),
               ANSIBLE_NOCOLOR='1', ANSIBLE_STDOUT_CALLBACK='default')
    return env


def test_quick_start_runs_from_the_installed_tarball(fresh_venv, collection_tarball, tmp_path):
    collections = tmp_path / 'collections'
    env = user_env(fresh_venv, collections)
    subprocess.run(['ansible-galaxy', 'collection', 'install', '--offline', '-p', str(collections),
                    str(collection_tarball)], env=env, check=True, capture_output=True)
    playbook = tmp_path / 'quickstart.yml'
    playbook.write_text(quick_start_playbook())
    images = tmp_path / 'qcow2-quickstart'
    runs = []
    for _run in range(2):
        run = subprocess.run(['ansible-playbook', str(playbook), '-e', 'dir=%s' % images], env=env, cwd=tmp_path,
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        runs.append(run.stdout)
    recaps = [re.search(r'localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0', out) for out in runs]
    assert all(recaps), runs[-1][-2000:]
    assert int(recaps[0].group(1)) > 0 and recaps[1].group(1) == '0'
    assert "vm1-upgrade.qcow2" in runs[0] and "base.qcow2" in runs[0]  # the chain it printed
    backups = sorted((images / 'backups' / 'vm1').glob('*.qcow2'))
    assert len(backups) == 1
    manifest = json.loads(backups[0].with_suffix('.manifest.json').read_text())
    assert manifest['file'] == str(backups[0]) and manifest['source'] == {'kind': 'path', 'path': str(images / 'vm1.qcow2')}
    assert manifest['verification']['result'] == 'ok' and manifest['verification']['check']['check_errors'] == 0

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A three-host fleet reached over real SSH (tests/fleet/sshd_fleet.py), for the workflow playbooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.backingchain.qcow2.tests.fleet.sshd_fleet import Fleet

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = next(p for p in sys.path if os.path.isdir(os.path.join(p, "ansible_collections", "backingchain")))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    os.chmod(str(root), 0o755)
    hosts = Fleet(str(root), python=sys.executable)
    hosts.start()
    try:
        yield hosts
    finally:
        _HOSTS_CPU.append(hosts.sessions_cpu_seconds())
        hosts.stop()


_HOSTS_CPU = []  # CPU seconds of each fleet's ssh sessions, shown at the end of the run


def pytest_terminal_summary(terminalreporter):
    seconds = [s for s in _HOSTS_CPU if s is not None]
    if seconds:
        terminalreporter.write_line("the hosts' side (ssh sessions, modules included) used %.0f s of CPU, not counted in "
                                    "the stage's CPU figure" % sum(seconds))


def run_playbook(fleet, playbook, extra_vars, check=False, limit=None, inventory=None):
    """ansible-playbook over SSH; returns (exit code, output)."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=10s", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory or fleet.inventory,
           str(REPO / "playbooks" / playbook), "-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if limit:
        cmd += ["--limit", limit]
    proc = subprocess.run(cmd, env=env, cwd=fleet.root, capture_output=True, text=True, timeout=1200, check=False)
    return proc.returncode, proc.stdout + proc.stderr

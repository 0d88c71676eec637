"""ansible-playbook runs of this checkout on localhost, for tests that kill or race real runs.

The collection is found through a temporary ANSIBLE_COLLECTIONS_PATH whose
ansible_collections/backingchain/qcow2 links to the checkout; the play runs with this
Python as interpreter. Runs are started in a session of their own; kill_run() kills the whole process tree, since
Ansible's worker processes (and the module under them) leave the playbook's process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# The snapshot_backup role on the variables given, its report written to report_file (also in check mode).
BACKUP_ROLE_WITH_REPORT = """
- name: Back up, then keep the report
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Back up
      ansible.builtin.include_role:
        name: backingchain.qcow2.snapshot_backup
    - name: Keep the report
      ansible.builtin.copy:
        content: "{{ snapshot_backup_report | to_nice_json }}"
        dest: "{{ report_file }}"
        mode: "0644"
      check_mode: false
"""


class Playbook:
    """One playbook (YAML text) with its extra variables, in a directory of its own."""

    def __init__(self, workdir: Path, text: str, variables: dict[str, t.Any], name: str = 'playbook'):
        self.workdir = Path(workdir)
        collections = self.workdir / 'collections'
        link = collections / 'ansible_collections' / 'backingchain' / 'qcow2'
        if not link.exists():
            link.parent.mkdir(parents=True)
            link.symlink_to(REPO, target_is_directory=True)
        playbook = self.workdir / ('%s.yml' % name)
        playbook.write_text(text)
        settings = self.workdir / ('%s.vars.json' % name)
        settings.write_text(json.dumps(dict(variables, ansible_python_interpreter=sys.executable)))
        # Each playbook gets its own temporary directories: a test can watch when its module runs.
        self.remote_tmp = self.workdir / ('%s.remote-tmp' % name)
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR='1',
                        ANSIBLE_LOCAL_TEMP=str(self.workdir / ('%s.local-tmp' % name)),
                        ANSIBLE_REMOTE_TEMP=str(self.remote_tmp))
        self.argv = [str(Path(sys.executable).with_name('ansible-playbook')), '-i', 'localhost,', '-c', 'local',
                     str(playbook), '-e', '@%s' % settings]

    def run(self, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def module_running(self) -> bool:
        """True while a module's AnsiballZ payload sits in this playbook's remote temporary directory."""
        return self.remote_tmp.is_dir() and any(self.remote_tmp.glob('ansible-tmp-*/AnsiballZ_*.py'))


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    table = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), fields[0])
    return table


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (Ansible's workers leave the process group, so killpg does not reach them)."""
    table = _process_table()
    tree, todo = [], [pid]
    while todo:
        parent = todo.pop()
        tree.append(parent)
        todo.extend(child for child, (ppid, _state) in table.items() if ppid == parent)
    return tree


def _threads(pid: int) -> int:
    """How many threads pid still has (0 once it is gone). A killed process whose main thread has exited shows as
    a zombie while a writer thread still finishes its write (an fsync on a busy disk): its files, and its image
    locks, stay open until that thread has exited too."""
    try:
        with open('/proc/%d/status' % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith('Threads:'))
    except (OSError, StopIteration, ValueError):
        return 0


def _signal_all(pids: t.Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_run(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGKILL a started run and every process it started (the module too), and wait until all are gone:
    a killed module releases its image locks only when it has exited."""
    pids = []
    if proc.poll() is None:
        _signal_all(_tree(proc.pid), signal.SIGSTOP)  # frozen, nothing forks while the tree is collected
        pids = _tree(proc.pid)
        _signal_all(pids, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = _process_table()
        if all(pid not in table or (table[pid][1] == 'Z' and _threads(pid) <= 1) for pid in pids):
            break
        time.sleep(0.01)
    for pipe in (proc.stdout, proc.stderr):
        if pipe:
            pipe.close()


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of localhost (ok, changed, failed, ...) from ansible-playbook's output."""
    for line in output.splitlines():
        if line.startswith('localhost') and 'ok=' in line:
            return {key: int(value) for key, value in (field.split('=') for field in line.split()[2:])}
    raise AssertionError('no PLAY RECAP in:\n%s' % output)

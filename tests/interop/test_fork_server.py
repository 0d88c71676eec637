"""The crash tests' children, forked from a server with the engine imported, behave as `python -c` children would."""

from __future__ import annotations

import json

from ansible_collections.backingchain.qcow2.tests.helpers.chains import run_child, run_engine
from ansible_collections.backingchain.qcow2.tests.helpers.crash import KILLED
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_img_create, qemu_img_info

_SHOW = """
import json, os, sys
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import testhooks
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "name": __name__, "crash_at": testhooks._crash_at,
                  "events": testhooks.io_event_count(), "mark": os.environ.get("FORK_SERVER_TEST_MARK")}))
print("to stderr", file=sys.stderr)
"""


def test_a_child_has_the_callers_argv_cwd_and_environment_and_a_fresh_crash_hook(tmp_path, monkeypatch):
    monkeypatch.setenv('FORK_SERVER_TEST_MARK', 'first')
    proc = run_child(_SHOW, ['a', 'b c'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown['argv'][0] == '-c' and shown['argv'][2:] == ['a', 'b c']
    assert shown['cwd'] == str(tmp_path) and shown['name'] == '__main__'
    assert shown == dict(shown, crash_at=0, events=0, mark='first')
    assert proc.stderr == 'to stderr\n'
    monkeypatch.setenv('FORK_SERVER_TEST_MARK', 'second')  # each child gets the environment of its call
    monkeypatch.chdir(tmp_path.parent)
    again = json.loads(run_child(_SHOW, [], crash_at=7).stdout)
    assert again == dict(again, crash_at=7, events=0, mark='second', cwd=str(tmp_path.parent))


def test_exit_codes_tracebacks_and_a_kill_at_the_nth_io_event(tmp_path):
    assert run_child('import sys; sys.exit(3)', []).returncode == 3
    assert run_child('import sys; sys.exit("bye")', []).returncode == 1
    failed = run_child('raise ValueError("no such thing")', [])
    assert failed.returncode == 1 and 'ValueError: no such thing' in failed.stderr and 'Traceback' in failed.stderr
    image = qemu_img_create(tmp_path / 'a.qcow2', '1M')
    kwargs = {'path': str(image), 'size': 2 * 1024 * 1024}
    whole = run_engine('grow_image', kwargs)
    assert whole.returncode == 0, whole.stderr
    events = json.loads(whole.stdout)['events']
    assert events >= 1
    killed = run_engine('grow_image', dict(kwargs, size=4 * 1024 * 1024), crash_at=1)
    assert killed.returncode == KILLED and killed.stdout == ''
    assert qemu_img_info(image)['virtual-size'] == 2 * 1024 * 1024  # killed before its first write

"""Two writers at once on the same image: exactly one proceeds, the other fails with qemu's lock message.

- two ansible-playbook runs of the same task, released at the same moment (both wait for a
  file the test creates, then run the module);
- the engine while qemu-img writes the image, and qemu-img while the engine writes it.
Afterwards qemu-img check finds nothing wrong and the guest view is what it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import ImageLockedError
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import locking
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.constants import LOCK_PERM_BASE
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    Layer,
    assert_clean,
    build_chain,
    same_view,
    start_engine,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.playbook import Playbook, kill_run, recap
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import backing_chain

LOCK_MESSAGE = 'Failed to get "write" lock'
CHAIN = [
    Layer('base.qcow2', 256 * MiB, steps=('write -P 0x11 0 192M',)),
    Layer('top.qcow2', steps=('write -P 0x31 8M 16M',)),
]
PLAYBOOK = """
- name: Flatten, when the test says go
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Wait for the starting signal
      ansible.builtin.command:  # wait_for polls once a second at best: too coarse to start both together
        argv: [sh, -c, 'while [ ! -e "$0" ]; do sleep 0.01; done', "{{ go }}"]
      changed_when: false
    - name: Flatten the image
      backingchain.qcow2.qcow2_rebase:
        path: "{{ image }}"
        backing_file: ""
"""


@pytest.fixture
def chain(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, CHAIN)
    return images, view_of(images / 'top.qcow2', tmp_path)


def _holds_write(path):
    """Whether another process holds qemu's write permission on path, asked without taking any lock (a probe that
    locks, as holders_conflict does, looks like a writer for a moment: a qemu-img starting then fails to lock)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        return locking._is_locked_by_other(fd, LOCK_PERM_BASE + locking.PERM_WRITE)  # pylint: disable=protected-access
    finally:
        os.close(fd)


def _wait_until_locked(path, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not _holds_write(path):
        assert proc.poll() is None, 'the writer ended before it was seen holding the image'
        assert time.monotonic() < deadline, 'the writer never locked the image'
        time.sleep(0.002)


def _wait_until_one_ended(procs, timeout=600.0):
    deadline = time.monotonic() + timeout
    while all(proc.poll() is None for proc in procs):
        assert time.monotonic() < deadline, 'neither run ended'
        time.sleep(0.05)


def test_two_playbooks_on_the_same_image(tmp_path, chain):
    images, before = chain
    go = tmp_path / 'go'
    variables = {'go': str(go), 'image': str(images / 'top.qcow2')}
    hold = tmp_path / 'hold'
    hold.touch()
    playbooks = [Playbook(tmp_path, PLAYBOOK, variables, name=name) for name in ('first', 'second')]
    for playbook in playbooks:
        # the flatten alone takes a fraction of a second, less than two module start-ups may lie apart: the
        # one that locks the image first waits before its first write until the other has ended
        playbook.env['BACKINGCHAIN_QCOW2_IO_HOLD'] = str(hold)
    runs = [playbook.start() for playbook in playbooks]
    try:
        time.sleep(3)  # both are past start-up and polling for the signal
        go.touch()
        _wait_until_one_ended(runs)
        hold.unlink()
        outputs = [run.communicate(timeout=600)[0] for run in runs]
    finally:
        for run in runs:
            kill_run(run)
    results = sorted(((run.returncode, recap(out), out) for run, out in zip(runs, outputs)), key=lambda r: r[0])
    assert results[0][0] != results[1][0], results  # not both through (nor both refused)
    (ok_rc, ok_recap, _ok_out), (failed_rc, failed_recap, failed_out) = results
    assert ok_rc == 0 and ok_recap['changed'] == 1, results
    assert failed_rc != 0 and failed_recap['failed'] == 1, results
    assert LOCK_MESSAGE in failed_out and 'top.qcow2' in failed_out, failed_out
    assert backing_chain(images / 'top.qcow2') == [(str(images / 'top.qcow2'), 'qcow2')]
    assert_clean([images / 'top.qcow2', images / 'base.qcow2'])
    assert same_view(images / 'top.qcow2', before)


def test_qemu_img_refused_while_the_engine_writes(chain):
    images, before = chain
    top = images / 'top.qcow2'
    hold = images.parent / 'hold'
    hold.touch()  # the engine locks top and then waits before its first write until the file is gone
    engine = start_engine('rebase', {'path': str(top), 'backing_file': ''}, io_hold=hold)
    try:
        _wait_until_locked(top, engine)
        for argv in (['commit', str(top)], ['rebase', '-u', '-b', '', str(top)], ['resize', str(top), '+1M']):
            qemu = subprocess.run(['qemu-img'] + argv, capture_output=True, text=True, check=False)
            assert qemu.returncode != 0 and LOCK_MESSAGE in qemu.stderr, (argv, qemu.stderr)
        assert engine.poll() is None, 'the engine went on before the test let it'
        hold.unlink()
        out, err = engine.communicate(timeout=600)
    finally:
        kill_run(engine)
    assert engine.returncode == 0, err
    assert backing_chain(top) == [(str(top), 'qcow2')]
    assert_clean([top, images / 'base.qcow2'])
    assert same_view(top, before)


def test_engine_refused_while_qemu_img_writes(chain):
    images, before = chain
    top = images / 'top.qcow2'
    # qemu-img's safe rebase onto nothing copies the backing file's data into top: long enough to race
    qemu = subprocess.Popen(['qemu-img', 'rebase', '-b', '', str(top)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_until_locked(top, qemu)
        # stopped, it keeps its locks mid-copy for as long as the engine's four tries take (left running, it
        # sometimes finished first, and the last tries met an image with no backing file)
        os.kill(qemu.pid, signal.SIGSTOP)
        assert _holds_write(top), 'qemu-img ended between being seen holding the image and being stopped'
        try:
            for call in (lambda: api.rebase(str(top), ''), lambda: api.commit(str(top)),
                         lambda: api.grow_image(str(top), 1024 * MiB), lambda: api.check(str(top), repair='leaks')):
                with pytest.raises(ImageLockedError, match=LOCK_MESSAGE) as refused:
                    call()
                assert str(top) in str(refused.value)
        finally:
            os.kill(qemu.pid, signal.SIGCONT)
        assert qemu.wait(timeout=600) == 0, qemu.stderr.read()
    finally:
        kill_run(qemu)
    assert backing_chain(top) == [(str(top), 'qcow2')]
    assert_clean([top, images / 'base.qcow2'])
    assert same_view(top, before)

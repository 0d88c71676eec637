"""Real module runs (ansible-playbook on localhost) killed with SIGKILL at random moments while the module works.

For each task: an uninterrupted run gives the time the module runs and the chain afterwards;
then runs of the same playbook are killed (the whole process group, module included) at a
random moment of that window (every other kill: soon after the module's first write). After each kill: qemu-img check finds no corruption in any
image (leaks allowed), the top still reads as before (a converted copy is absent or whole);
running the playbook again succeeds with the right chain and view, leaves no temporary file,
and a third run changes nothing.
"""

from __future__ import annotations

import random
import time

import pytest

from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    Layer,
    assert_clean,
    build_chain,
    copy_images,
    file_states,
    reset_dir,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.playbook import Playbook, kill_run, recap
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import backing_chain

KILLS = 4
CHAIN = [
    Layer('base.qcow2', 256 * MiB, steps=('write -P 0x11 0 128M', 'write -P 0x12 192M 32M')),
    Layer('mid.qcow2', steps=('write -P 0x21 64M 48M',)),
    Layer('top.qcow2', steps=('write -P 0x31 16M 96M', 'write -z 200M 8M')),
]
TASKS = {
    'commit': ('backingchain.qcow2.qcow2_commit', {'path': '{{ dir }}/top.qcow2'}),
    'flatten': ('backingchain.qcow2.qcow2_rebase', {'path': '{{ dir }}/top.qcow2', 'backing_file': ''}),
    'safe rebase': ('backingchain.qcow2.qcow2_rebase', {'path': '{{ dir }}/top.qcow2', 'backing_file': 'base.qcow2'}),
    'convert': ('backingchain.qcow2.qcow2_image', {'path': '{{ dir }}/flat.qcow2', 'source': '{{ dir }}/top.qcow2'}),
    'internal snapshot': ('backingchain.qcow2.qcow2_snapshot', {'path': '{{ dir }}/top.qcow2', 'name': 'nightly'}),
}


def _playbook(workdir, task, directory):
    module, args = TASKS[task]
    lines = ['- name: One task', '  hosts: localhost', '  gather_facts: false', '  tasks:',
             '    - name: The task under test', '      %s:' % module]
    lines += ['        %s: "%s"' % (key, value) for key, value in args.items()]
    return Playbook(workdir, '\n'.join(lines) + '\n', {'dir': str(directory)})


def _module_window(playbook):
    """Run once, uninterrupted: seconds from the module's payload appearing to the run's end."""
    proc = playbook.start()
    while proc.poll() is None and not playbook.module_running():
        time.sleep(0.002)
    started = time.monotonic()
    out, _unused = proc.communicate()
    assert proc.returncode == 0, out
    return time.monotonic() - started


def _kill_while_running(playbook, delay, directory=None):
    """Start a run and kill it delay seconds after its module starts, or (directory given) after the module's
    first change to a file there, so that some kills surely land while it writes."""
    untouched = file_states(directory) if directory else None
    proc = playbook.start()
    while proc.poll() is None and not playbook.module_running():
        time.sleep(0.002)
    while untouched is not None and proc.poll() is None and file_states(directory) == untouched:
        time.sleep(0.001)
    time.sleep(delay)
    killed = proc.poll() is None
    kill_run(proc)
    return killed


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    directory = tmp_path_factory.mktemp('pristine')
    build_chain(directory, CHAIN)
    return directory, view_of(directory / 'top.qcow2', tmp_path_factory.mktemp('views'))


@pytest.mark.parametrize('task', list(TASKS))
def test_module_killed_at_random_moments(tmp_path, pristine, task, record_property):
    source, before = pristine
    work = copy_images(source, tmp_path / 'images')
    playbook = _playbook(tmp_path, task, work)
    window = _module_window(playbook)
    result = work / ('flat.qcow2' if task == 'convert' else 'top.qcow2')
    expected_chain = [(name.replace(str(work), '{dir}'), fmt) for name, fmt in backing_chain(result)]
    assert same_view(result, before)

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    touched = killed = 0
    for kill in range(KILLS):
        reset_dir(work, source)
        untouched = file_states(work)
        if kill % 2:  # once the module has started writing
            killed += _kill_while_running(playbook, rng.uniform(0, window / 4), work)
        else:  # any moment of the module's run
            killed += _kill_while_running(playbook, rng.uniform(0, window))
        touched += file_states(work) != untouched
        images = [p for p in work.iterdir() if p.suffix == '.qcow2']
        assert_clean(images, leaks_ok=True)
        if task != 'convert' or result.exists():
            assert same_view(result, before), seed

        rerun = playbook.run()
        assert rerun.returncode == 0, (seed, rerun.stdout, rerun.stderr)
        assert same_view(result, before), seed
        assert [(name.replace(str(work), '{dir}'), fmt) for name, fmt in backing_chain(result)] == expected_chain
        assert not [p.name for p in work.iterdir() if p.name.endswith('.tmp')], seed  # nothing half-built left
        assert_clean([p for p in work.iterdir() if p.suffix == '.qcow2'], leaks_ok=True)
        again = playbook.run()
        assert again.returncode == 0 and recap(again.stdout)['changed'] == 0, (seed, again.stdout)
    assert killed and touched, 'no kill landed while the module worked (seed %d, window %.2fs)' % (seed, window)
    record_property('crash_points', killed)
    print('%s: %d kills of a running module (%d after it had written), window %.2fs, seed %d'
          % (task, killed, touched, window, seed))

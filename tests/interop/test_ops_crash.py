"""Crash safety: every operation killed at each of its writes, flushes and truncates, and at random moments.

The engine runs in a child process with BACKINGCHAIN_QCOW2_CRASH_AT=N (it
SIGKILLs itself when about to issue its Nth I/O event) for every N from 1
to the number of events a full run issues. After each crash:
- qemu-img check finds no corruption in any image of the chain (leaks are
  allowed: that is what an interrupted allocation leaves);
- the chain reads from its top exactly what it read before the operation;
- the engine's own check (repair all), on a copy of the crashed images,
  leaves qemu-img check with nothing to report, leaks included, and the view
  unchanged;
- running the operation again completes it, with the right final view and
  chain, and once more changes nothing.
convert must leave its destination either absent or complete. Internal
snapshots (create, revert, delete) and image creation run through their
modules (qcow2_snapshot, qcow2_image), so the task's own re-run is what
converges; a crashed snapshot operation leaves the snapshot table and the
active view either as before or as after, never a mix.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    Layer,
    assert_clean,
    build_chain,
    count_events,
    run_engine,
    same_view,
    start_engine,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.crash import (
    engine_repair_is_clean,
    leftovers,
    module_result,
    run_module,
    snapshot_names,
    snapshot_view,
)
from ansible_collections.backingchain.qcow2.tests.helpers.limits import crash_points, record_crash_points
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    dirty_ranges,
    qemu_compare,
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_img_info,
    qemu_io,
)

KILLED = -9

# Small chains: every structure an operation touches (growth over a longer backing file, zero clusters, several
# L2 tables, internal snapshots, v2 images), with few enough I/O events to crash at each one.
BASE = Layer('base.qcow2', 4 * MiB, options={'cluster_size': 4096},
             steps=('write -P 0x11 0 256k', 'write -P 0x12 2M 2M', 'write -P 0x13 3968k 64k'))
MID_SHORT = Layer('mid.qcow2', 2 * MiB, options={'cluster_size': 16384},
                  steps=('write -P 0x21 128k 64k', 'write -z 1984k 32k'))
TOP = Layer('top.qcow2', 6 * MiB, options={'cluster_size': 4096},
            steps=('write -P 0x31 4k 8k', 'write -z 160k 24k', 'write -P 0x32 5M 12k'))
V2 = {'cluster_size': 16384, 'compat': '0.10'}  # v2 has no zero clusters: zeros are data, so fewer, larger clusters

CHAINS = {
    # mid shorter than base, top longer than both: commit grows mid over base's data, re-points past mid's end
    'short-mid': [BASE, MID_SHORT, TOP],
    'v2': [BASE._replace(options=V2, size=2 * MiB + 512 * 1024, steps=('write -P 0x11 0 256k', 'write -P 0x12 2M 512k')),
           MID_SHORT._replace(options=V2),
           TOP._replace(options=V2)],
    'snapshots': [BASE._replace(steps=BASE.steps + ('snapshot b1', 'write -P 0x14 0 64k')), MID_SHORT,
                  TOP._replace(steps=TOP.steps[:1] + ('snapshot t1',) + TOP.steps[1:])],
    'raw-base': [Layer('base.raw', 4 * MiB, 'raw', steps=('write -P 0x11 0 256k', 'write -P 0x12 2M 2M')),
                 MID_SHORT, TOP],
}


def _other(directory):
    other = qemu_img_create(directory / 'other.qcow2', 5 * MiB, options={'cluster_size': 8192})
    qemu_io(other, 'write -P 0x41 0 1M', 'write -P 0x42 3M 2M')


# name: (chain, api function, keyword arguments (paths relative to the chain's directory), chain afterwards)
SCENARIOS = {
    'commit into the backing file': ('short-mid', 'commit', {'path': 'top.qcow2'}, ['top', 'mid', 'base']),
    'commit into the backing file, v2': ('v2', 'commit', {'path': 'top.qcow2'}, ['top', 'mid', 'base']),
    'commit with internal snapshots': ('snapshots', 'commit', {'path': 'top.qcow2'}, ['top', 'mid', 'base']),
    'commit into a deeper base': ('short-mid', 'commit', {'path': 'top.qcow2', 'base': 'base.qcow2'}, ['top', 'base']),
    'commit into a raw base': ('raw-base', 'commit', {'path': 'top.qcow2', 'base': 'base.raw'}, ['top', 'base.raw']),
    'commit an intermediate layer': ('short-mid', 'commit', {'path': 'top.qcow2', 'top': 'mid.qcow2'}, ['top', 'base']),
    'commit an intermediate layer, v2': ('v2', 'commit', {'path': 'top.qcow2', 'top': 'mid.qcow2'}, ['top', 'base']),
    'safe rebase within the chain': ('short-mid', 'rebase',
                                     {'path': 'top.qcow2', 'backing_file': 'base.qcow2', 'backing_format': 'qcow2'},
                                     ['top', 'base']),
    'safe rebase within the chain, v2': ('v2', 'rebase',
                                         {'path': 'top.qcow2', 'backing_file': 'base.qcow2', 'backing_format': 'qcow2'},
                                         ['top', 'base']),
    'safe rebase onto an unrelated image': ('short-mid', 'rebase',
                                            {'path': 'top.qcow2', 'backing_file': 'other.qcow2', 'backing_format': 'qcow2'},
                                            ['top', 'other']),
    'flatten in place': ('snapshots', 'rebase', {'path': 'top.qcow2', 'backing_file': ''}, ['top']),
    'flatten in place, v2': ('v2', 'rebase', {'path': 'top.qcow2', 'backing_file': ''}, ['top']),
}
PATH_KEYS = ('path', 'top', 'base', 'source', 'dest')


def _kwargs(kwargs, directory):
    return {k: str(directory / v) if k in PATH_KEYS and v else v for k, v in kwargs.items()}


def _chain_names(names, directory):
    out = []
    for name in names:
        file = name if '.' in name else name + '.qcow2'
        out.append((str(directory / file), 'raw' if file.endswith('.raw') else 'qcow2'))
    return out


def _reset(work, pristine):
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    for entry in pristine.iterdir():  # cp keeps holes where there are holes, and written zeros as they are
        subprocess.run(['cp', '--sparse=auto', str(entry), str(work / entry.name)], check=True)


def _images(directory):
    """The qcow2 images of the chain (other.qcow2, a rebase target, is only ever read)."""
    return [p for p in sorted(directory.iterdir()) if p.suffix == '.qcow2' and p.name != 'other.qcow2']


def _prepare(tmp_path, chain):
    pristine = tmp_path / 'pristine'
    pristine.mkdir()
    build_chain(pristine, CHAINS[chain])
    _other(pristine)
    return pristine, view_of(pristine / 'top.qcow2', tmp_path)


def _after_crash(work, before):
    """What must hold right after a crash: no corruption anywhere, and the top reads as before."""
    assert_clean(_images(work), leaks_ok=True)
    assert same_view(work / 'top.qcow2', before)


@pytest.mark.parametrize('scenario', list(SCENARIOS))
def test_crash_at_every_io_event(tmp_path, scenario, record_property):
    chain, op, kwargs, after = SCENARIOS[scenario]
    pristine, before = _prepare(tmp_path, chain)
    work = tmp_path / 'work'
    _reset(work, pristine)
    total = count_events(op, _kwargs(kwargs, work), cwd=work)
    assert total > 0
    expected_chain = _chain_names(after, work)
    assert backing_chain(work / 'top.qcow2') == expected_chain and same_view(work / 'top.qcow2', before)

    repaired = 0
    points = crash_points(total)
    for n in points:
        _reset(work, pristine)
        proc = run_engine(op, _kwargs(kwargs, work), crash_at=n, cwd=work)
        assert proc.returncode == KILLED, (n, proc.stderr)
        _after_crash(work, before)
        repaired += engine_repair_is_clean(work, _images(work), {'top.qcow2': before}, tmp_path) > 0
        getattr(api, op)(**_kwargs(kwargs, work))  # the re-run finishes the job
        assert same_view(work / 'top.qcow2', before), n
        assert backing_chain(work / 'top.qcow2') == expected_chain, n
        assert_clean(_images(work), leaks_ok=True)
        assert getattr(api, op)(**_kwargs(kwargs, work)).changed is False, n
    record_crash_points(record_property, points, total)
    print('%s: %d crash points, %d left leaks the engine repaired' % (scenario, total, repaired))


@pytest.mark.parametrize('compress', [False, True])
def test_convert_crash_at_every_io_event(tmp_path, compress, record_property):
    pristine, before = _prepare(tmp_path, 'short-mid')
    work = tmp_path / 'work'
    kwargs = {'source': 'top.qcow2', 'dest': 'flat.qcow2', 'compress': compress}
    _reset(work, pristine)
    total = count_events('convert', _kwargs(kwargs, work), cwd=work)

    points = crash_points(total)
    for n in points:
        _reset(work, pristine)
        proc = run_engine('convert', _kwargs(kwargs, work), crash_at=n, cwd=work)
        assert proc.returncode == KILLED, (n, proc.stderr)
        dest = work / 'flat.qcow2'
        if dest.exists():  # complete or absent, never half-written under its name
            assert_clean([dest])
            assert same_view(dest, before)
            assert backing_chain(dest) == [(str(dest), 'qcow2')]
        assert_clean([p for p in _images(work) if p != dest])
        assert same_view(work / 'top.qcow2', before)
        api.convert(**_kwargs(kwargs, work))
        assert same_view(dest, before) and backing_chain(dest) == [(str(dest), 'qcow2')]
        assert_clean([dest])
    record_crash_points(record_property, points, total)
    print('convert%s: %d crash points' % (' -c' if compress else '', total))


@pytest.mark.parametrize('bitmaps', [False, True])
def test_grow_crash_at_every_io_event(tmp_path, bitmaps, record_property):
    """Growing an overlay shorter than its backing file (and, with bitmaps, past what one bitmap table cluster
    covers): interrupted, it reads as before or grown with zeros, and qemu can open it."""
    pristine = tmp_path / 'pristine'
    pristine.mkdir()
    base = qemu_img_create(pristine / 'base.qcow2', 300 * MiB)
    qemu_io(base, 'write -P 1 0 8M', 'write -P 1 %dM 2M' % (298 if bitmaps else 2))
    over = qemu_img_create(pristine / 'top.qcow2', MiB + 512, backing='base.qcow2', cwd=pristine,
                           options={'cluster_size': 4096 if not bitmaps else 65536})
    qemu_io(over, 'write -P 2 64k 4k')
    if bitmaps:
        qemu_img('bitmap', '--add', '-g', '512', over, 'fine')
        qemu_img('bitmap', '--add', over, 'coarse')
        qemu_io(over, 'write -P 3 128k 4k')
    before = view_of(over, tmp_path)
    work = tmp_path / 'work'
    _reset(work, pristine)
    new_size = (299 if bitmaps else 3) * MiB  # 299M: past the 256M one table cluster of bitmap "fine" covers
    kwargs = {'path': str(work / 'top.qcow2'), 'size': new_size}
    total = count_events('grow_image', kwargs, cwd=work)
    points = crash_points(total)
    for n in points:
        _reset(work, pristine)
        assert run_engine('grow_image', kwargs, crash_at=n, cwd=work).returncode == KILLED
        assert_clean([work / 'top.qcow2'], leaks_ok=True)  # also: qemu opens it, bitmaps included
        assert same_view(work / 'top.qcow2', before)  # the grown part, if any, reads zeros like past the old end
        engine_repair_is_clean(work, [work / 'top.qcow2'], {'top.qcow2': before}, tmp_path)
        api.grow_image(**kwargs)
        qemu_io(work / 'top.qcow2', 'read -P 2 64k 4k', 'read -P 0 %d %d' % (MiB + 512, 2 * MiB - 512),
                'read -P 0 %d 1M' % (new_size - MiB))  # zeros where the backing file holds 1s
        if bitmaps:
            assert dirty_ranges(work / 'top.qcow2', 'fine') == [(128 * 1024, 4096)], n
        assert api.grow_image(**kwargs) is False, n  # converged: nothing left to do
        assert_clean([work / 'top.qcow2'], leaks_ok=True)
    record_crash_points(record_property, points, total)


# ---- internal snapshots, through qcow2_snapshot -------------------------------------------------------------------

SNAP_STEPS = ('write -P 0x11 0 1M', 'snapshot s1', 'write -P 0x12 512k 1M', 'write -z 3M 64k', 'snapshot s2',
              'write -P 0x13 2M 64k')
SNAPSHOT_CHAINS = {
    'v3': [Layer('top.qcow2', 4 * MiB, options={'cluster_size': 4096}, steps=SNAP_STEPS)],
    'v2': [Layer('top.qcow2', 4 * MiB, options={'cluster_size': 16384, 'compat': '0.10'}, steps=SNAP_STEPS)],
    'extended-l2': [Layer('top.qcow2', 4 * MiB, options={'cluster_size': 32768, 'extended_l2': 'on'},
                          steps=('write -P 0x11 0 4k', 'write -P 0x12 40k 2k', 'snapshot s1', 'write -P 0x13 1k 1k',
                                 'write -z 64k 4k', 'snapshot s2', 'write -P 0x14 1M 3k'))],
    'overlay': [Layer('base.qcow2', 4 * MiB, options={'cluster_size': 4096}, steps=('write -P 0x21 0 4M',)),
                Layer('top.qcow2', options={'cluster_size': 4096}, steps=SNAP_STEPS)],
}
SNAPSHOT_TASKS = {
    'create': {'name': 'new'},
    'delete': {'name': 's1', 'state': 'absent'},
    'revert': {'name': 's1', 'state': 'reverted'},
}


def _active_view(path, scratch, views):
    """The key in views of the view path's chain shows, or None."""
    active = view_of(path, scratch)
    try:
        return next((key for key, view in views.items() if same_view(active, view)), None)
    finally:
        active.unlink()


@pytest.mark.parametrize('task', list(SNAPSHOT_TASKS))
@pytest.mark.parametrize('chain', list(SNAPSHOT_CHAINS))
def test_snapshot_crash_at_every_io_event(tmp_path, chain, task, record_property):
    pristine = tmp_path / 'pristine'
    pristine.mkdir()
    build_chain(pristine, SNAPSHOT_CHAINS[chain])
    top = pristine / 'top.qcow2'
    snap_views = {name: snapshot_view(top, name, tmp_path) for name in snapshot_names(top)}
    work = tmp_path / 'work'
    _reset(work, pristine)
    args = dict(SNAPSHOT_TASKS[task], path=str(work / 'top.qcow2'))
    result, total = module_result('qcow2_snapshot', args)
    assert result['changed'] is True and total > 0
    views = {'before': view_of(top, tmp_path), 'after': view_of(work / 'top.qcow2', tmp_path)}
    names = {'before': snapshot_names(top), 'after': snapshot_names(work / 'top.qcow2')}
    snap_views['new'] = views['before']  # what a snapshot taken now holds
    if task == 'revert':  # the active view changes, the table does not
        assert names['before'] == names['after'] and same_view(views['after'], snap_views['s1'])
        assert not same_view(views['after'], views['before'])
    else:  # the table changes, the active view does not
        assert names['before'] != names['after'] and same_view(views['after'], views['before'])

    def state_of(path):
        """'before' or 'after' when path holds exactly that state, else None."""
        table = snapshot_names(path)
        if task == 'revert':
            return _active_view(path, tmp_path, views) if table == names['before'] else None
        key = next((k for k, v in names.items() if v == table), None)
        return key if key and _active_view(path, tmp_path, views) else None

    seen = {'before': 0, 'after': 0}
    repaired = 0
    points = crash_points(total)
    for n in points:
        _reset(work, pristine)
        proc = run_module('qcow2_snapshot', args, crash_at=n)
        assert proc.returncode == KILLED, (n, proc.stdout, proc.stderr)
        assert_clean(_images(work), leaks_ok=True)
        state = state_of(work / 'top.qcow2')
        assert state is not None, (n, snapshot_names(work / 'top.qcow2'))  # all of the old state or all of the new
        seen[state] += 1
        for name in names[state]:  # every snapshot still holds what it held
            assert same_view(snapshot_view(work / 'top.qcow2', name, tmp_path), snap_views[name]), (n, name)
        repaired += engine_repair_is_clean(work, _images(work), {'top.qcow2': views[state]}, tmp_path,
                                           {'top.qcow2': {name: snap_views[name] for name in names[state]}}) > 0
        rerun, _events = module_result('qcow2_snapshot', args)  # the task again: finishes what was interrupted
        assert rerun['changed'] is (state == 'before'), (n, rerun)
        assert state_of(work / 'top.qcow2') == 'after', n
        assert_clean(_images(work), leaks_ok=True)
        assert module_result('qcow2_snapshot', args)[0]['changed'] is False, n
    assert seen['before'] and seen['after'], seen  # crashes on both sides of the switch
    record_crash_points(record_property, points, total)
    print('snapshot %s (%s): %d crash points, %d before the switch, %d after, %d left leaks the engine repaired'
          % (task, chain, total, seen['before'], seen['after'], repaired))


# ---- image creation, through qcow2_image ------------------------------------------------------------------------

CREATE_TASKS = {
    'default': {'size': '4M'},
    'preallocation=metadata': {'size': '4M', 'preallocation': 'metadata'},
    'preallocation=falloc': {'size': '4M', 'preallocation': 'falloc'},
    'preallocation=full': {'size': '4M', 'preallocation': 'full'},
    'extended L2': {'size': '4M', 'cluster_size': '16K', 'extended_l2': True},
    'v2, 512-byte clusters, preallocated': {'size': '1M', 'cluster_size': '512', 'compat': '0.10',
                                            'preallocation': 'metadata'},
    '1-bit refcounts, preallocation=full': {'size': '2M', 'cluster_size': '4K', 'refcount_bits': 1,
                                            'preallocation': 'full'},
    'backing file': {'backing_file': 'top.qcow2', 'backing_format': 'qcow2'},
    'backing file, extended L2, preallocated': {'backing_file': 'top.qcow2', 'backing_format': 'qcow2',
                                                'cluster_size': '32K', 'extended_l2': True,
                                                'preallocation': 'metadata'},
    'copy of a chain (source)': {'source': 'top.qcow2'},
}
PROPERTIES = ('virtual-size', 'cluster-size', 'backing-filename', 'backing-filename-format')


def _properties(path):
    info = qemu_img_info(path)
    data = info['format-specific']['data']
    return ({k: info.get(k) for k in PROPERTIES},
            {k: data.get(k) for k in ('compat', 'refcount-bits', 'extended-l2', 'lazy-refcounts')})


def _same_image(path, reference):
    assert _properties(path) == _properties(reference)
    assert qemu_compare(path, reference, strict=True)  # same content and same allocation (preallocation)
    assert qemu_img_check(path).clean


@pytest.mark.parametrize('task', list(CREATE_TASKS))
def test_create_crash_at_every_io_event(tmp_path, task, record_property):
    """A new image is built under a temporary name and renamed into place: a crash leaves no image or the whole
    one, and the task run again makes it (and removes what the interrupted run left)."""
    pristine, _before = _prepare(tmp_path, 'short-mid')
    work = tmp_path / 'work'
    args = dict(CREATE_TASKS[task], path=str(work / 'new.qcow2'))
    if 'source' in args:
        args['source'] = str(work / args['source'])
    _reset(work, pristine)
    result, total = module_result('qcow2_image', args, cwd=work)
    assert result['changed'] is True and total > 0
    # the reference lives beside the chain, so that a relative backing name resolves for it too
    # cp keeps the holes (preallocation=metadata leaves data clusters as holes; qemu reads them as zeros)
    subprocess.run(['cp', '--sparse=auto', str(work / 'new.qcow2'), str(pristine / 'reference.qcow2')], check=True)
    reference = work / 'reference.qcow2'

    made = 0
    points = crash_points(total)
    for n in points:
        _reset(work, pristine)
        proc = run_module('qcow2_image', args, crash_at=n, cwd=work)
        assert proc.returncode == KILLED, (n, proc.stdout, proc.stderr)
        existed = (work / 'new.qcow2').exists()
        if existed:  # renamed into place: complete
            _same_image(work / 'new.qcow2', reference)
            made += 1
        assert_clean([p for p in _images(work) if p.name not in ('new.qcow2', 'reference.qcow2')])
        rerun, _events = module_result('qcow2_image', args, cwd=work)
        assert rerun['changed'] is not existed, (n, rerun)
        _same_image(work / 'new.qcow2', reference)
        assert leftovers(work, 'new.qcow2') == [], n  # the interrupted run's temporary files are gone
        assert module_result('qcow2_image', args, cwd=work)[0]['changed'] is False, n
    record_crash_points(record_property, points, total)
    print('create (%s): %d crash points, %d after the rename' % (task, total, made))


# ---- random kills on a larger chain ------------------------------------------------------------------------------

BIG = [
    Layer('base.qcow2', 48 * MiB, options={'cluster_size': 4096}, steps=('write -P 0x11 0 20M', 'write -P 0x12 40M 8M')),
    Layer('mid.qcow2', 32 * MiB, options={'cluster_size': 4096}, steps=('write -P 0x21 8M 12M', 'write -z 24M 4M')),
    Layer('top.qcow2', 64 * MiB, options={'cluster_size': 4096}, steps=('write -P 0x31 2M 6M', 'write -P 0x32 50M 4M')),
]
RANDOM_KILLS = 4
RANDOM_SCENARIOS = {
    'commit': ('commit', {'path': 'top.qcow2'}),
    'commit an intermediate layer': ('commit', {'path': 'top.qcow2', 'top': 'mid.qcow2'}),
    'safe rebase within the chain': ('rebase', {'path': 'top.qcow2', 'backing_file': 'base.qcow2',
                                                'backing_format': 'qcow2'}),
    'safe rebase onto an unrelated image': ('rebase', {'path': 'top.qcow2', 'backing_file': 'other.qcow2',
                                                       'backing_format': 'qcow2'}),
    'flatten in place': ('rebase', {'path': 'top.qcow2', 'backing_file': ''}),
    'convert': ('convert', {'source': 'top.qcow2', 'dest': 'flat.qcow2'}),
}


@pytest.mark.parametrize('scenario', list(RANDOM_SCENARIOS))
def test_random_sigkill(tmp_path, scenario, record_property):
    op, kwargs = RANDOM_SCENARIOS[scenario]
    pristine = tmp_path / 'pristine'
    pristine.mkdir()
    build_chain(pristine, BIG)
    _other(pristine)
    before = view_of(pristine / 'top.qcow2', tmp_path)
    work = tmp_path / 'work'
    _reset(work, pristine)
    started = time.monotonic()
    proc = run_engine(op, _kwargs(kwargs, work), cwd=work)
    duration = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    events = json.loads(proc.stdout)['events']
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    killed = 0
    for _unused in range(RANDOM_KILLS):
        _reset(work, pristine)
        child = start_engine(op, _kwargs(kwargs, work), cwd=work)
        time.sleep(rng.uniform(0.05, duration))
        child.kill()
        child.communicate()
        killed += child.returncode == KILLED
        if op == 'convert':
            assert_clean(_images(work))  # the source is only read
        else:
            _after_crash(work, before)
        getattr(api, op)(**_kwargs(kwargs, work))
        result = work / ('flat.qcow2' if op == 'convert' else 'top.qcow2')
        assert same_view(result, before), seed
    assert killed > 0, 'every kill came after the operation ended (seed %d, %.2fs, %d events)' % (seed, duration, events)
    record_property('crash_points', killed)
    print('%s: %d random kills (seed %d)' % (scenario, killed, seed))

"""Crash consistency: a long engine write sequence killed at many points (the Nth write/flush via
BACKINGCHAIN_QCOW2_CRASH_AT=N, and SIGKILL at random moments). Afterwards qemu-img check finds no
errors (leaks are allowed), every write that had been flushed reads back, every snapshot that had been
created is there with its content, and the engine can carry on writing to the image.
"""

from __future__ import annotations

import random
import time

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.tests.helpers.engine_worker import run_worker, start_worker
from ansible_collections.backingchain.qcow2.tests.helpers.limits import examples
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    CHECK_CORRUPTIONS, qemu_img, qemu_img_check, qemu_img_create, qemu_io, raw_of)

MiB = 1 << 20
OPS = 40

# name -> (qemu-img create options, image size, snapshots in the sequence)
CONFIGS = {
    '64k': ({}, 8 * MiB, True),
    '4k-refcount4': ({'cluster_size': 4096, 'refcount_bits': 4}, 2 * MiB, True),
    '512-refcount1': ({'cluster_size': 512, 'refcount_bits': 1}, MiB, False),  # grows the refcount table
    'extl2': ({'extended_l2': 'on'}, 8 * MiB, True),
    'v2': ({'compat': '0.10', 'cluster_size': 4096}, 2 * MiB, True),
    'lazy-refcounts': ({'lazy_refcounts': 'on'}, 8 * MiB, False),
}
POINTS_PER_CONFIG = examples(16)
RANDOM_KILLS = examples(4)


def start_image(d, config):
    opts, size, _snapshots = CONFIGS[config]
    img = qemu_img_create(d / 'crash.qcow2', size, options=opts or None)
    qemu_io(img, 'write -P 0xee 0 %d' % (size // 4), 'write -z %d %d' % (size // 2, size // 8))
    return img


def task(img, config, log):
    return {'task': 'crash-sequence', 'path': str(img), 'log': str(log), 'seed': 7, 'count': OPS,
            'snapshots': CONFIGS[config][2]}


def read_log(log):
    ops, durable = {}, -1
    if log.exists():
        for line in log.read_text().splitlines():
            words = line.split()
            if words[0] == 'op':
                ops[int(words[1])] = (words[2], int(words[3]), int(words[4]), int(words[5]))
            elif words[0] == 'durable':
                durable = int(words[1])
    return ops, durable


def verify(img, log, initial):
    """What must hold after a crash; returns the number of operations known durable."""
    result = qemu_img_check(img)
    assert result.returncode != CHECK_CORRUPTIONS and not result.report.get('corruptions'), result.report
    assert not result.report.get('check-errors'), result.report
    engine = check(str(img))
    assert engine['result'].get('leaks', 0) == result.report.get('leaks', 0)

    ops, durable = read_log(log)
    expected = bytearray(initial)
    snapshots = {}
    for i in range(durable + 1):
        kind, offset, length, byte = ops[i]
        if kind == 'snapshot':
            snapshots['crash%d' % i] = bytes(expected)
        else:
            expected[offset:offset + length] = bytes(length) if kind == 'zero' else bytes([byte]) * length
    uncertain = [ops[i] for i in sorted(ops) if i > durable]
    content = raw_of(img, dest_dir=img.parent).read_bytes()
    sector_ok = bytearray(b'\x01') * (len(content) // 512)
    for kind, offset, length, _byte in uncertain:
        if kind != 'snapshot':
            for s in range(offset // 512, (offset + length - 1) // 512 + 1):
                sector_ok[s] = 0
    for s in range(len(sector_ok)):
        if sector_ok[s]:
            assert content[s * 512:(s + 1) * 512] == expected[s * 512:(s + 1) * 512], 'sector %d' % s

    listed = qemu_img('snapshot', '-l', img)
    for name, data in snapshots.items():
        assert ' %s ' % name in listed, name
        out = img.with_name(name + '.raw')
        qemu_img('convert', '-l', 'snapshot.name=' + name, '-O', 'raw', img, out)
        assert out.read_bytes() == data, name
        out.unlink()

    with open_chain(str(img), writable=True) as chain:  # the engine carries on after the crash
        chain.top.write(0, b'\x42' * 1000)
    assert not qemu_img_check(img).report.get('corruptions')
    return durable + 1


@pytest.fixture(scope='module')
def io_events(tmp_path_factory):
    """I/O events of a full run per configuration (dry run): the range of crash points."""
    counts = {}
    for config in CONFIGS:
        d = tmp_path_factory.mktemp('dry-' + config)
        img = start_image(d, config)
        proc = run_worker(task(img, config, d / 'log'))
        assert proc.returncode == 0, proc.stderr
        counts[config] = int(proc.stdout.split()[-1])
        verify(img, d / 'log', raw_of(start_image(tmp_path_factory.mktemp('init'), config)).read_bytes())
    return counts


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_crash_at_the_nth_io(tmp_path_factory, io_events, config, record_property):
    total = io_events[config]
    rng = random.Random(config)
    points = sorted({1, 2, 3, total} | {rng.randint(1, total) for _point in range(POINTS_PER_CONFIG - 4)})
    durable_counts = []
    for n in points:
        d = tmp_path_factory.mktemp('crash-%s-%d' % (config, n))
        img = start_image(d, config)
        initial = raw_of(img, dest_dir=d).read_bytes()
        proc = run_worker(task(img, config, d / 'log'), env={'BACKINGCHAIN_QCOW2_CRASH_AT': str(n)})
        assert proc.returncode == -9, (n, proc.returncode, proc.stderr[-2000:])
        durable_counts.append(verify(img, d / 'log', initial))
    record_property('crash_points', len(points))
    record_property('interop_figures', ('crash at the Nth I/O', {
        'config': config, 'points': len(points), 'io_events': total,
        'ops_durable_min': min(durable_counts), 'ops_durable_max': max(durable_counts)}))
    assert max(durable_counts) > min(durable_counts)  # the points really were spread over the sequence


def _sequence_started(proc, log):
    """Wait until the worker logs its first operation (python start-up is over); False if it ended first."""
    while not log.exists():
        if proc.poll() is not None:
            return False
        time.sleep(0.001)
    return True


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_sigkill_at_random_moments(tmp_path_factory, config, record_property):
    rng = random.Random('sigkill-' + config)
    # how long the sequence itself runs, from its first logged operation to the worker's exit
    d = tmp_path_factory.mktemp('kill-%s-dry' % config)
    proc = start_worker(task(start_image(d, config), config, d / 'log'))
    assert _sequence_started(proc, d / 'log'), proc.communicate()
    started = time.monotonic()
    proc.communicate()
    duration = time.monotonic() - started
    killed = 0
    for attempt in range(RANDOM_KILLS):
        d = tmp_path_factory.mktemp('kill-%s-%d' % (config, attempt))
        img = start_image(d, config)
        initial = raw_of(img, dest_dir=d).read_bytes()
        proc = start_worker(task(img, config, d / 'log'))
        if _sequence_started(proc, d / 'log'):
            time.sleep(rng.uniform(0, duration))
        proc.kill()
        proc.communicate()
        if proc.returncode == -9:
            killed += 1
        else:  # the sequence ran faster than the timed one (a busy machine slows one run, not all): aim earlier
            duration /= 2
        verify(img, d / 'log', initial)
    assert killed, 'every kill came after the sequence ended (%.3f s)' % duration
    record_property('crash_points', RANDOM_KILLS)
    record_property('interop_figures', ('SIGKILL at random moments', {
        'config': config, 'points': RANDOM_KILLS, 'killed_mid_sequence': killed}))

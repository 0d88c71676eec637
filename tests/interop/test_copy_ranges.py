"""Copying the guest view of ranges of a chain into a new layer over another image.

Random range sets (sector-aligned and not, touching, overlapping, down to one byte) over random source
chains and random backing chains (cluster sizes from 512 bytes to 2 MiB, zero clusters, compressed
clusters, layers shorter than the ones above them), new layers of random cluster sizes. The reference is
built with qemu-io alone: an overlay of the same backing file, with qemu-io 'write -s' of the source's
bytes in each range. The new layer must compare equal to it over the whole disk (qemu-img compare), be
clean under qemu-img check, record a relative backing name and the backing format, and allocate every
byte of the ranges itself (zero clusters included: a hole would show the backing file).
"""

from __future__ import annotations

import json
import os
import random

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.tests.helpers.chains import Layer, build_chain, count_events, run_engine
from ansible_collections.backingchain.qcow2.tests.helpers.limits import crash_points, examples, record_crash_points
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    QemuError, qemu_compare, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_img_map, qemu_io,
    qemu_io_holding, raw_of)

KiB, MiB = 1024, 1 << 20
SEEDS = examples(24)


def random_chain(rng, prefix, depth):
    layers, extent = [], 0
    for i in range(depth):
        cs = rng.choice([512, 4096, 65536, 2 * MiB])
        size = rng.choice([2 * MiB, 3 * MiB + 512, 4 * MiB]) if i == 0 or rng.random() < 0.5 else None
        extent = size or extent
        steps = []
        if cs < 2 * MiB:  # qemu writes compressed clusters only where nothing is allocated yet
            for cluster in sorted({rng.randrange(extent // cs) for _unused in range(rng.randint(0, 3))}):
                steps.append('write -c -P %d %d %d' % (rng.randrange(1, 255), cluster * cs,
                                                       min(cs, extent - cluster * cs)))
        for _unused in range(rng.randint(0, 8)):
            offset = rng.randrange(extent // 512) * 512
            length = min(rng.choice([512, 4096, 65536, 300 * KiB, MiB]), extent - offset)
            steps.append(('write -z %d %d' if rng.random() < 0.3 else 'write -P %d %%d %%d' % rng.randrange(1, 255))
                         % (offset, length))
        layers.append(Layer('%s%d.qcow2' % (prefix, i), size, 'qcow2', {'cluster_size': cs}, tuple(steps)))
    return layers


def random_ranges(rng, size):
    ranges = []
    for _unused in range(rng.randint(0, 12)):
        offset = rng.randrange(size // 512) * 512 if rng.random() < 0.6 else rng.randrange(size)
        ranges.append((offset, min(size - offset, rng.choice([1, 512, 4096, 65536, 100000, MiB, 3 * MiB]))))
    return ranges


def reference(directory, source, backing, ranges, size):
    """The expected layer, built with qemu-io: an overlay of backing with source's bytes written in each range."""
    ref = qemu_img_create(directory / 'reference.qcow2', size, backing=os.path.relpath(backing, directory),
                          cwd=directory)
    view = raw_of(source, directory).read_bytes()
    commands = []
    for i, (offset, length) in enumerate(ranges):
        if length:
            piece = directory / ('piece%d' % i)
            piece.write_bytes(view[offset:offset + length])
            commands.append('write -s %s %d %d' % (piece, offset, length))
    if commands:
        qemu_io(ref, *commands)
    return ref


def allocated_by_itself(path, ranges):
    """True if the image itself (not its backing file) allocates every byte of ranges."""
    own = [(e['start'], e['start'] + e['length']) for e in qemu_img_map(path) if e['depth'] == 0 and e['present']]
    return all(any(start <= offset and offset + length <= end for start, end in own)
               or all(any(start <= b < end for start, end in own) for b in range(offset, offset + length, 512))
               for offset, length in ranges if length)


@pytest.mark.parametrize('seed', range(SEEDS))
def test_random_ranges_of_random_chains_read_as_the_reference(tmp_path, seed):
    rng = random.Random(seed)
    source = build_chain(tmp_path, random_chain(rng, 'src', rng.randint(1, 3)))[0]
    backing = build_chain(tmp_path, random_chain(rng, 'old', rng.randint(1, 2)))[0]
    size = qemu_img_info(source)['virtual-size']
    ranges = random_ranges(rng, size)
    layers = tmp_path / 'layers'
    layers.mkdir()
    options = CreateOptions(cluster_size=rng.choice([512, 65536, 2 * MiB])) if rng.random() < 0.5 else None
    result = api.copy_ranges(str(source), str(layers / 'new.qcow2'), ranges, backing_file=str(backing),
                             options=options)
    new = layers / 'new.qcow2'
    assert qemu_compare(reference(layers, source, backing, ranges, size), new)
    assert qemu_img_check(new).clean
    info = qemu_img_info(new)
    assert info['backing-filename'] == os.path.join('..', backing.name)
    assert info['backing-filename-format'] == 'qcow2'
    assert info['virtual-size'] == size
    assert allocated_by_itself(new, ranges)
    assert result.bytes_in_ranges <= sum(length for _offset, length in ranges)
    assert not [f for f in os.listdir(layers) if f.endswith('.tmp')]


@pytest.mark.parametrize('seed', range(min(SEEDS, 8)))
def test_compressed_ranges_read_as_the_reference(tmp_path, seed):
    """compress=True writes the same view as the plain copy, its data clusters compressed where they shrink; its
    bytes_copied counts the same guest bytes."""
    rng = random.Random(1000 + seed)
    source = build_chain(tmp_path, random_chain(rng, 'src', rng.randint(1, 3)))[0]
    backing = build_chain(tmp_path, random_chain(rng, 'old', rng.randint(1, 2)))[0]
    size = qemu_img_info(source)['virtual-size']
    ranges = random_ranges(rng, size) + [(0, min(size, 3 * 65536))]
    layers = tmp_path / 'layers'
    layers.mkdir()
    plain = api.copy_ranges(str(source), str(layers / 'plain.qcow2'), ranges, backing_file=str(backing))
    result = api.copy_ranges(str(source), str(layers / 'new.qcow2'), ranges, backing_file=str(backing), compress=True)
    new = layers / 'new.qcow2'
    assert qemu_compare(reference(layers, source, backing, ranges, size), new)
    check = qemu_img_check(new)
    assert check.clean
    data_clusters = [e for e in qemu_img_map(layers / 'plain.qcow2') if e['depth'] == 0 and e['data']]
    assert (check.report.get('compressed-clusters', 0) > 0) == bool(data_clusters)
    assert allocated_by_itself(new, ranges)
    assert (result.bytes_copied, result.bytes_zeroed) == (plain.bytes_copied, plain.bytes_zeroed)


def test_zero_ranges_stay_zero_when_the_backing_file_grows_under_the_layer(tmp_path):
    """Past a short backing file's end a range reads zeros; written as zero clusters, it still does once a commit
    (a backup retention's merge) has grown the backing file and filled it there."""
    source = qemu_img_create(tmp_path / 'disk.qcow2', 8 * MiB)
    qemu_io(source, 'write -P 5 0 1M')
    full = qemu_img_create(tmp_path / 'full.qcow2', 4 * MiB)
    api.copy_ranges(str(source), str(tmp_path / 'inc.qcow2'), [(0, MiB), (5 * MiB, 2 * MiB)],
                    backing_file='full.qcow2')
    qemu_io(tmp_path / 'inc.qcow2', 'read -P 0 5M 2M', 'read -P 5 0 1M')
    qemu_img('resize', full, '8M')
    qemu_io(full, 'write -P 9 4M 4M')
    qemu_io(tmp_path / 'inc.qcow2', 'read -P 0 5M 2M', 'read -P 9 4M 1M', 'read -P 9 7M 1M')


def test_a_frozen_image_is_read_while_a_vm_holds_it(tmp_path):
    """Below a running VM's overlay the image is held read-only: a shared read lock is enough. The active image of a
    running VM is held for writing: only force_share (qemu-img -U) reads it."""
    source = qemu_img_create(tmp_path / 'disk.qcow2', 4 * MiB)
    qemu_io(source, 'write -P 3 1M 1M')
    with qemu_io_holding(source, read_only=True):
        api.copy_ranges(str(source), str(tmp_path / 'a.qcow2'), [(MiB, MiB)])
    with qemu_io_holding(source):
        with pytest.raises(api.ImageLockedError, match='Failed to get shared "write" lock'):
            api.copy_ranges(str(source), str(tmp_path / 'b.qcow2'), [(MiB, MiB)])
        api.copy_ranges(str(source), str(tmp_path / 'b.qcow2'), [(MiB, MiB)], force_share=True)
    for name in ('a.qcow2', 'b.qcow2'):
        qemu_io(tmp_path / name, 'read -P 3 1M 1M', 'read -P 0 0 1M')
        assert qemu_img_check(tmp_path / name).clean


def test_a_plan_writes_nothing_and_refusals_leave_no_file(tmp_path):
    source = qemu_img_create(tmp_path / 'disk.qcow2', 4 * MiB)
    qemu_io(source, 'write -P 3 0 1M', 'write -z 2M 1M')
    raw = tmp_path / 'base.raw'
    raw.write_bytes(bytes(4 * MiB))
    plan = api.copy_ranges(str(source), str(tmp_path / 'inc.qcow2'), [(0, MiB), (2 * MiB, MiB)],
                           backing_file=str(raw), dry_run=True)
    assert plan.bytes_copied == MiB and plan.backing_file == 'base.raw' and plan.backing_format == 'raw'
    assert not (tmp_path / 'inc.qcow2').exists()
    done = api.copy_ranges(str(source), str(tmp_path / 'inc.qcow2'), [(0, MiB), (2 * MiB, MiB)],
                           backing_file=str(raw))
    assert (done.bytes_copied, done.bytes_zeroed) == (MiB, MiB)
    assert json.loads(qemu_img('info', '--output=json', tmp_path / 'inc.qcow2'))['backing-filename-format'] == 'raw'
    for dest, ranges, message in [
            (tmp_path / 'x.qcow2', [(3 * MiB, 2 * MiB)], 'lies outside'),
            (tmp_path / 'x.qcow2', [(-1, 5)], 'lies outside'),
            (tmp_path / 'x.qcow2', ['nonsense'], 'pair'),
            (source, [(0, 1)], 'part of the backing chain'),
            (raw, [(0, 1)], 'its own backing file')]:
        with pytest.raises(api.Qcow2Error, match=message):
            api.copy_ranges(str(source), str(dest), ranges, backing_file=str(raw))
    assert not (tmp_path / 'x.qcow2').exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    with pytest.raises(QemuError):
        qemu_img('info', tmp_path / 'x.qcow2')


def test_example_counts_are_recorded(record_property):
    record_property('interop_figures', ('random cases', {
        'test': 'copy of ranges into a new layer vs a qemu-io reference', 'seeds': SEEDS}))


def test_a_copy_killed_anywhere_leaves_no_layer_or_a_complete_one(tmp_path, record_property):
    source = qemu_img_create(tmp_path / 'disk.qcow2', 4 * MiB, options={'cluster_size': 4096})
    qemu_io(source, 'write -P 3 0 1M', 'write -z 2M 64k', 'write -P 4 3M 100k')
    full = qemu_img_create(tmp_path / 'full.qcow2', 4 * MiB)
    qemu_io(full, 'write -P 1 0 4M')
    kwargs = {'source': str(source), 'dest': str(tmp_path / 'inc.qcow2'), 'backing_file': 'full.qcow2',
              'ranges': [[0, 65536], [2 * MiB, 65536], [3 * MiB, 50000]]}
    events = count_events('copy_ranges', kwargs)
    expected = reference(tmp_path, source, full, kwargs['ranges'], 4 * MiB)
    os.unlink(kwargs['dest'])
    before = qemu_img('map', '--output=json', source)
    points = crash_points(events)
    for n in points:
        proc = run_engine('copy_ranges', kwargs, crash_at=n)
        assert proc.returncode == -9, (n, proc.stderr)
        if os.path.exists(kwargs['dest']):  # killed after the rename: complete
            assert qemu_compare(expected, kwargs['dest']), n
            os.unlink(kwargs['dest'])
    assert qemu_img('map', '--output=json', source) == before
    api.copy_ranges(**kwargs)  # a new run removes what the killed ones left
    assert qemu_compare(expected, kwargs['dest'])
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    record_crash_points(record_property, points, events)

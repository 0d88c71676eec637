"""Persistent bitmaps through every engine operation, against the same sequence done by qemu-img and qemu-io.

Each case draws a chain of three images (cluster sizes from 512 bytes to 2 MiB, a shorter middle layer or a
larger top now and then, data, zero and compressed writes), gives every layer two bitmaps of random granularities (512
bytes to 1 MiB; one of them disabled now and then), copies it, runs one engine operation on one copy and
what qemu would do on the other, and compares every bitmap of every image as qemu reads it: names,
flags, granularity and dirty ranges (qemu-nbd -B). What qemu does, found by running it:

- guest and zero writes dirty what they write, rounded out to the granularity;
- commit (qemu-img commit runs a mirror job into the base) dirties, in the base, what the layers above
  hold, rounded out to the job's granularity (the base's cluster size, 4 KiB to 64 KiB); the top's own
  bitmaps are left as they were, for emptying it changes no guest data;
- safe rebase dirties the 512-byte sectors where the old and the new backing views differ and the image
  allocates nothing, as it writes them in ascending order, except where an earlier write of the same rebase
  allocated the image's cluster (its copy-on-write kept the old view there, and qemu skips what is
  allocated): the engine dirties every such sector, so its bits are qemu's or more by those sectors
  (checked against the sectors computed from the views qemu-img reads); unsafe rebase dirties nothing;
- grow leaves the new area clean; internal snapshot create and delete change no bitmap;
- reverting to an internal snapshot is refused while the image has a bitmap ("Device has active dirty
  bitmaps"), by qemu and by the engine.
"""

from __future__ import annotations

import random

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.tests.helpers.chains import Layer, build_chain, copy_images
from ansible_collections.backingchain.qcow2.tests.helpers.limits import examples
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    QemuError, dirty_ranges, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_img_map, qemu_io, raw_of)

KiB, MiB = 1024, 1 << 20
SIZE = 8 * MiB
LAYERS = ('base.qcow2', 'mid.qcow2', 'top.qcow2')
OPERATIONS = ('writes', 'commit', 'commit into the base below', 'commit the middle layer', 'rebase within the chain',
              'rebase onto another image', 'flatten', 'unsafe rebase', 'grow', 'internal snapshots')
SEEDS = examples(3)


def bitmaps(path):
    """{name: (flags, granularity, dirty ranges)} of one image, as qemu reads it."""
    return {b['name']: (b['flags'], b['granularity'], dirty_ranges(path, b['name']))
            for b in qemu_img_info(path)['format-specific']['data'].get('bitmaps', [])}


def _steps(rng, extent, cs):
    steps = []
    if cs < 2 * MiB:  # compressed writes first: qemu writes compressed clusters only where nothing is allocated
        for cluster in sorted({rng.randrange(extent // cs) for _unused in range(rng.randint(0, 2))}):
            steps.append('write -c -P %d %d %d' % (rng.randrange(1, 255), cluster * cs, min(cs, extent - cluster * cs)))
    for _unused in range(rng.randint(1, 6)):
        offset = rng.randrange(extent // 512) * 512
        length = min(rng.choice([512, 4096, 65536, 300 * KiB, MiB]), extent - offset)
        if rng.random() < 0.3:
            steps.append('write -z %d %d' % (offset, length))
        else:
            steps.append('write -P %d %d %d' % (rng.randrange(1, 255), offset, length))
    return tuple(steps)


def build(directory, rng):
    short_mid = rng.random() < 0.3
    sizes = {'base.qcow2': SIZE, 'mid.qcow2': SIZE // 2 if short_mid else None,
             'top.qcow2': SIZE + 3 * MiB if rng.random() < 0.3 else SIZE}  # a larger top grows the base it commits into
    layers = []
    for name in LAYERS:
        cs = rng.choice([512, 4096, 65536, 2 * MiB])
        layers.append(Layer(name, sizes[name], 'qcow2', {'cluster_size': cs}, _steps(rng, sizes[name] or SIZE, cs)))
    build_chain(directory, layers)
    for name in LAYERS:
        for granularity in rng.sample([512, 4096, 65536, MiB], 2):
            args = ['--add', '-g', str(granularity)] + (['--disable'] if rng.random() < 0.2 else [])
            qemu_img('bitmap', *args, directory / name, 'g%d' % granularity)
    other = qemu_img_create(directory / 'other.qcow2', rng.choice([SIZE // 2, SIZE]), options={'cluster_size': 4096})
    qemu_io(other, 'write -P 7 1M 2M')
    return layers


def _below_mid_end(path, lo, hi):
    """The ranges of [lo, hi) where the image itself allocates nothing."""
    out = []
    for extent in qemu_img_map(path):
        start, end = max(lo, extent['start']), min(hi, extent['start'] + extent['length'])
        if start < end and not (extent['depth'] == 0 and extent['present']):
            out.append((start, end - start))
    return out


def engine_does(d, operation, writes):
    top = str(d / 'top.qcow2')
    if operation == 'writes':
        with open_chain(top, writable=True) as chain:
            for offset, length, zero in writes:
                if zero:
                    chain.top.write_zeroes(offset, length)
                else:
                    chain.top.write(offset, b'\x42' * length)
    elif operation == 'commit':
        api.commit(top)
    elif operation == 'commit into the base below':
        api.commit(top, base=str(d / 'base.qcow2'))
    elif operation == 'commit the middle layer':
        api.commit(top, top=str(d / 'mid.qcow2'))
    elif operation == 'rebase within the chain':
        api.rebase(top, 'base.qcow2', 'qcow2')
    elif operation == 'rebase onto another image':
        api.rebase(top, 'other.qcow2', 'qcow2')
    elif operation == 'flatten':
        api.rebase(top, '')
    elif operation == 'unsafe rebase':
        api.rebase(top, 'other.qcow2', 'qcow2', unsafe=True)
    elif operation == 'grow':
        api.grow_image(top, 3 * SIZE + 512)
        with open_chain(top, writable=True) as chain:
            chain.top.write(3 * SIZE - 1000, b'\x42' * 1500)
    else:
        api.create_snapshot(top, 's1')
        with open_chain(top, writable=True) as chain:
            chain.top.write(MiB, b'\x42' * 5000)
        api.create_snapshot(top, 's2')
        api.delete_snapshot(top, 's1')


def qemu_does(d, operation, writes):
    top = d / 'top.qcow2'
    if operation == 'writes':
        qemu_io(top, *[('write -z %d %d' if zero else 'write -P 0x42 %d %d') % (offset, length)
                       for offset, length, zero in writes])
    elif operation == 'commit':
        qemu_img('commit', top)
    elif operation == 'commit into the base below':
        qemu_img('commit', '-b', 'base.qcow2', top, cwd=d)
        qemu_img('rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', top, cwd=d)
    elif operation == 'commit the middle layer':
        # past a shorter middle layer's end the top read zeros; the engine writes them before pointing it at base
        mid_size = qemu_img_info(d / 'mid.qcow2')['virtual-size']
        zeros = ['write -z %d %d' % r for r in _below_mid_end(top, mid_size, SIZE)] if mid_size < SIZE else []
        if zeros:
            qemu_io(top, *zeros)
        qemu_img('commit', d / 'mid.qcow2')
        qemu_img('rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', top, cwd=d)
    elif operation == 'rebase within the chain':
        qemu_img('rebase', '-b', 'base.qcow2', '-F', 'qcow2', top, cwd=d)
    elif operation == 'rebase onto another image':
        qemu_img('rebase', '-b', 'other.qcow2', '-F', 'qcow2', top, cwd=d)
    elif operation == 'flatten':
        qemu_img('rebase', '-b', '', top)
    elif operation == 'unsafe rebase':
        qemu_img('rebase', '-u', '-b', 'other.qcow2', '-F', 'qcow2', top, cwd=d)
    elif operation == 'grow':
        qemu_img('resize', top, str(3 * SIZE + 512))
        qemu_io(top, 'write -P 0x42 %d 1500' % (3 * SIZE - 1000))
    else:
        qemu_img('snapshot', '-c', 's1', top)
        qemu_io(top, 'write -P 0x42 1M 5000')
        qemu_img('snapshot', '-c', 's2', top)
        qemu_img('snapshot', '-d', 's1', top)


@pytest.mark.parametrize('seed', range(SEEDS))
@pytest.mark.parametrize('operation', OPERATIONS)
def test_bitmaps_after_an_operation_are_what_qemu_leaves(tmp_path, operation, seed):
    rng = random.Random('%s-%d' % (operation, seed))
    pristine = tmp_path / 'pristine'
    pristine.mkdir()
    layers = build(pristine, rng)
    writes = [(o, min(n, SIZE - o), rng.random() < 0.3) for o, n in
              ((rng.randrange(SIZE // 512) * 512, rng.choice([512, 5000, 65536, 700000])) for _unused in range(5))]
    ours, theirs = copy_images(pristine, tmp_path / 'ours'), copy_images(pristine, tmp_path / 'qemu')
    engine_does(ours, operation, writes)
    qemu_does(theirs, operation, writes)
    for name in LAYERS:
        if not (ours / name).exists():
            continue
        assert qemu_img_check(ours / name).clean
        if operation in REBASES and name == 'top.qcow2':
            rebased_top_bitmaps(pristine, operation, bitmaps(ours / name), bitmaps(theirs / name), tmp_path)
        else:
            assert bitmaps(ours / name) == bitmaps(theirs / name), (name, [layer.options for layer in layers])


REBASES = {'rebase within the chain': 'base.qcow2', 'rebase onto another image': 'other.qcow2', 'flatten': None}


def rebased_top_bitmaps(pristine, operation, ours, theirs, scratch):
    """The same bitmaps; ours mark exactly the differing sectors where top allocates nothing (rounded out to the
    granularity), read from the views qemu-img converts; qemu's are those or fewer (see the module docstring)."""
    assert {n: b[:2] for n, b in ours.items()} == {n: b[:2] for n, b in theirs.items()}
    top = pristine / 'top.qcow2'
    size = qemu_img_info(top)['virtual-size']
    old = _view(pristine / 'mid.qcow2', size, scratch)
    new = _view(pristine / REBASES[operation], size, scratch) if REBASES[operation] else bytes(size)
    own = [(e['start'], e['start'] + e['length']) for e in qemu_img_map(top) if e['depth'] == 0 and e['present']]
    differing = [s for s in range(0, size, 512) if old[s:s + 512] != new[s:s + 512]
                 and not any(start <= s < end for start, end in own)]
    for name, (flags, granularity, ranges) in ours.items():
        if 'auto' not in flags:
            assert ranges == theirs[name][2] == [], name
            continue
        granules = sorted({s // granularity for s in differing})
        expected = _join([(g * granularity, min(size, (g + 1) * granularity)) for g in granules])
        assert _join([(o, o + n) for o, n in ranges]) == expected, name
        assert _within([(o, o + n) for o, n in theirs[name][2]], expected), name


def _view(path, size, scratch):
    data = raw_of(path, scratch).read_bytes()[:size]
    return data + bytes(size - len(data))


def _join(ranges):
    out = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _within(inner, outer):
    return all(any(s <= start and end <= e for s, e in outer) for start, end in inner)


def test_reverting_an_internal_snapshot_is_refused_while_the_image_has_bitmaps(tmp_path):
    img = qemu_img_create(tmp_path / 'a.qcow2', SIZE)
    qemu_io(img, 'write -P 1 0 1M')
    qemu_img('snapshot', '-c', 's1', img)
    qemu_io(img, 'write -P 2 0 1M')
    qemu_img('bitmap', '--add', '--disable', img, 'off')  # even a disabled one: qemu checks for any bitmap
    with pytest.raises(QemuError, match='Device has active dirty bitmaps'):
        qemu_img('snapshot', '-a', 's1', img)
    before = img.read_bytes()
    with pytest.raises(api.Qcow2Error, match="Could not apply snapshot 's1'.*Device has active dirty bitmaps"):
        api.revert_snapshot(str(img), 's1')
    assert img.read_bytes() == before
    api.change_bitmap(str(img), 'remove', 'off')
    api.revert_snapshot(str(img), 's1')
    qemu_io(img, 'read -P 1 0 1M')
    assert qemu_img_check(img).clean

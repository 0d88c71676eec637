"""Damaged and hostile images: every operation ends in a typed Qcow2Error or a result, never a traceback,
a hang or a huge allocation."""

from __future__ import annotations

import os
import shutil
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import (
    CorruptionError, FormatError, Qcow2Error)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.info import allocated_bytes
from ansible_collections.backingchain.qcow2.tests.helpers import qcow2_poke as poke
from ansible_collections.backingchain.qcow2.tests.helpers.limits import time_limit

MiB = 1 << 20
PEAK_BYTES = 96 * MiB  # the largest table qemu itself accepts is a 32 MiB L1


def _seed(directory, name, **opts):
    """A small image with data, zeros, a snapshot and a second L1 entry."""
    path = os.path.join(str(directory), name)
    api.create_image(path, CreateOptions(size=opts.pop('size', 8 * MiB), **opts))
    with open_chain(path, writable=True) as chain:
        cs = chain.top.cluster_size
        chain.top.write(0, b'\x5a' * (3 * cs + 100))
        chain.top.write_zeroes(5 * cs, 2 * cs)
        chain.top.write(chain.top.size - cs, b'\xa5' * 512)
    if opts.get('refcount_bits', 16) > 1:  # internal snapshots need refcounts above 1
        api.create_snapshot(path, 'before')
        with open_chain(path, writable=True) as chain:
            chain.top.write(0, b'\x77' * 4096)
    return path


@pytest.fixture(scope='module')
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp('seeds')
    return [
        _seed(d, 'v3-4k.qcow2', cluster_size=4096),
        _seed(d, 'v2-512.qcow2', cluster_size=512, compat='0.10', size=2 * MiB),
        _seed(d, 'extl2.qcow2', cluster_size=16384, extended_l2=True, refcount_bits=2),
        _seed(d, 'bits1.qcow2', cluster_size=512, refcount_bits=1, size=MiB),
    ]


def _write(path):
    with open_chain(path, fmt='qcow2', writable=True, backing=False) as chain:
        img = chain.top
        img.write(1000, b'w' * 70000)
        img.write_zeroes(3000, 50000)
        img.write(max(0, img.size - 5000), b'e' * 5000)


def _read(path):
    with open_chain(path, fmt='qcow2', backing=False) as chain:
        img = chain.top
        n = min(img.size, 4 * MiB)
        img.read(0, n)
        img.extents(0, img.size)
        allocated_bytes(img)


OPERATIONS = {
    'read': _read,
    'info': lambda p: api.image_info(p, backing_chain=False),
    'check': api.check,
    'repair': lambda p: api.check(p, repair='all'),
    'write': _write,
    'snapshots': lambda p: (api.list_snapshots(p), api.create_snapshot(p, 'new'), api.revert_snapshot(p, '1'),
                            api.delete_snapshot(p, 'new')),
    'grow': lambda p: api.grow_image(p, 64 * MiB),
}


def run_bounded(operation, path):
    """Run one operation; return the Qcow2Error it raised, or None. Anything else fails the test."""
    tracemalloc.start()
    try:
        with time_limit(30):
            OPERATIONS[operation](path)
    except Qcow2Error as exc:
        assert str(exc)
        return exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_BYTES, '%s allocated %d bytes at peak' % (operation, peak)
    return None


patches = st.lists(st.tuples(
    st.sampled_from(['header', 'cluster0', 'anywhere', 'table entry']),
    st.floats(0, 1, exclude_max=True),
    st.sampled_from(['byte', 'zero64', 'ones64', 'bit64', 'random64'])), min_size=1, max_size=6)


def _apply(path, edits, data):
    size = os.path.getsize(path)
    hdr = poke.header(path)
    tables = [hdr['l1_table_offset'], hdr['refcount_table_offset'], poke.l1_entry(path, 0) & poke.OFFSET_MASK,
              poke.reftable_entry(path, 0) & poke.REFT_OFFSET_MASK, hdr['snapshots_offset']]
    with open(path, 'r+b') as f:
        for area, where, how in edits:
            if area == 'header':
                offset = int(where * 112)
            elif area == 'cluster0':
                offset = int(where * min(size, hdr['cluster_size']))
            elif area == 'table entry':
                offset = tables[int(where * len(tables))] + 8 * int(where * 64)
            else:
                offset = int(where * size)
            if how == 'byte':
                value = bytes([data.draw(st.integers(0, 255))])
            else:
                offset &= ~7
                value = {'zero64': bytes(8), 'ones64': b'\xff' * 8,
                         'bit64': (1 << data.draw(st.integers(0, 63))).to_bytes(8, 'big'),
                         'random64': data.draw(st.binary(min_size=8, max_size=8))}[how]
            f.seek(offset)
            f.write(value)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 3), edits=patches, operation=st.sampled_from(sorted(OPERATIONS)), data=st.data())
def test_mutated_images_fail_cleanly(tmp_path_factory, seeds, seed, edits, operation, data):
    path = str(tmp_path_factory.mktemp('hostile') / 'x.qcow2')
    shutil.copy(seeds[seed], path)
    _apply(path, edits, data)
    run_bounded(operation, path)


# ---- targeted cases ----

@pytest.fixture
def image(tmp_path, seeds):
    path = str(tmp_path / 'x.qcow2')
    shutil.copy(seeds[0], path)
    return path


@pytest.mark.parametrize('operation', sorted(OPERATIONS))
def test_the_seed_images_are_clean(seeds, tmp_path, operation):
    for seed in seeds:
        if operation == 'snapshots' and 'bits1' in seed:
            continue
        path = str(tmp_path / os.path.basename(seed))
        shutil.copy(seed, path)
        assert run_bounded(operation, path) is None, seed


@pytest.mark.parametrize('field, value', [
    ('l1_size', 8 * MiB // 8),  # an 8 MiB L1 lying past the end of the file
    ('refcount_table_clusters', 8 * MiB // 4096),  # the largest refcount table qemu accepts
    ('l1_table_offset', 1 << 50),
    ('refcount_table_offset', 1 << 50),
    ('size', 1 << 50),
])
@pytest.mark.parametrize('operation', ['read', 'check', 'write'])
def test_large_but_legal_tables_stay_bounded(image, field, value, operation):
    poke.set_header_field(image, field, value)
    run_bounded(operation, image)


def test_huge_snapshot_table_claims_are_bounded(image):
    poke.set_header_field(image, 'nb_snapshots', 65536)
    for operation in ('read', 'info', 'check', 'snapshots'):
        err = run_bounded(operation, image)
        assert err is None or isinstance(err, (FormatError, CorruptionError)), operation


def test_snapshot_entry_with_too_much_extra_data(image):
    offset = poke.header(image)['snapshots_offset']
    with open(image, 'r+b') as f:
        f.seek(offset + 36)
        f.write(struct.pack('>I', 1025))
    with pytest.raises(FormatError, match='Too much extra metadata'):
        api.list_snapshots(image)


def test_l2_offset_unaligned(image):
    poke.set_l1_entry(image, 0, poke.l1_entry(image, 0) | 0x200)
    with pytest.raises(CorruptionError, match='unaligned'):
        OPERATIONS['read'](image)
    assert api.check(image)['exit_code'] == 2


def test_data_offset_unaligned(image):
    poke.set_l2_entry(image, 0, poke.l2_entry(image, 0) | 0x200)
    with pytest.raises(CorruptionError, match='unaligned'):
        OPERATIONS['read'](image)


def test_compressed_cluster_past_the_end_of_the_file(image):
    poke.set_l2_entry(image, 0, poke.OFLAG_COMPRESSED | (1 << 40))
    with pytest.raises(CorruptionError, match='ompress'):
        OPERATIONS['read'](image)


def test_l1_pointing_at_itself(image):
    l1 = poke.header(image)['l1_table_offset']
    poke.set_l1_entry(image, 0, poke.OFLAG_COPIED | l1)
    run_bounded('read', image)  # reads the L1 as an L2 table: garbage, but a result or a typed error
    assert isinstance(run_bounded('write', image), CorruptionError)
    assert api.check(image)['exit_code'] == 2


def test_refcount_overflow_is_a_typed_error(tmp_path):
    path = _seed(tmp_path, 'two.qcow2', cluster_size=4096, refcount_bits=2)
    api.create_snapshot(path, 'second')
    with pytest.raises(CorruptionError, match='overflow'):  # one more reference would need refcount 4 > 3
        api.create_snapshot(path, 'third')
    assert api.check(path)['exit_code'] == 0


@pytest.mark.parametrize('disk_size', [1 << 62, (1 << 63) - 512, 12345])
def test_snapshot_with_an_absurd_disk_size(image, disk_size):
    entry = poke.header(image)['snapshots_offset']
    poke.write_u64(image, entry + 48, disk_size)  # extra data: vm_state_size_large, then disk_size
    assert 'invalid disk size' in str(run_bounded('snapshots', image))  # reverting to it is refused
    for operation in ('check', 'info'):
        assert run_bounded(operation, image) is None

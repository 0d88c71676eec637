"""The engine writes, qemu reads: the same guest writes applied by the engine and by qemu-io to copies of
one image give images 'qemu-img compare' calls identical, and the engine's passes 'qemu-img check' clean.

Example counts are small for CI; a longer run: INTEROP_EXAMPLES=300 .venv/bin/pytest -n auto -k engine_writes tests/interop
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.tests.helpers.limits import examples
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    qemu_compare, qemu_img, qemu_img_check, qemu_img_create, qemu_io, qemu_io_script)

MiB = 1 << 20
EXAMPLES = examples(25)


def _prefill(img, cs, size):
    qemu_io(img, 'write -P 1 0 %d' % min(3 * cs, size // 4), 'write -P 2 %d %d' % (size // 2, min(2 * cs + 512, size // 4)),
            'write -z %d %d' % (3 * size // 4, min(2 * cs, size // 8)), 'write -P 3 %d 512' % (size - 512))


def _plain(d, cs, size, **opts):
    img = qemu_img_create(d / 'start.qcow2', size, options=dict(cluster_size=cs, **opts))
    _prefill(img, cs, size)
    return img


def _snapshots(d, cs, size):
    img = _plain(d, cs, size)
    qemu_img('snapshot', '-c', 's1', img)
    qemu_io(img, 'write -P 4 %d %d' % (cs, cs))
    qemu_img('snapshot', '-c', 's2', img)
    return img


def _snapshots_refcount2(d, cs, size):
    img = _plain(d, cs, size, refcount_bits=2)
    qemu_img('snapshot', '-c', 's1', img)
    return img


def _compressed(d, cs, size, **opts):
    plain = _plain(d, cs, size, **opts)
    img = d / 'start-c.qcow2'
    qemu_img('convert', '-c', '-O', 'qcow2', '-o', ','.join(['cluster_size=%d' % cs] + ['%s=%s' % kv for kv in opts.items()]),
             plain, img)
    return img


def _backing(d, cs, size, fmt):
    if fmt == 'raw':
        base = d / 'base.raw'
        base.write_bytes(bytes(range(256)) * ((size - 2 * cs) // 256))
    else:
        base = qemu_img_create(d / 'base.qcow2', size - 2 * cs)
        qemu_io(base, 'write -P 9 0 %d' % (size - 2 * cs), 'write -z %d %d' % (cs, cs))
    img = qemu_img_create(d / 'start.qcow2', size, backing=base.name, backing_fmt=fmt,
                          options=dict(cluster_size=cs), cwd=d)
    qemu_io(img, 'write -P 5 %d %d' % (cs // 2, cs), 'write -z %d %d' % (3 * cs, cs))
    return img


# name -> (cluster size, image size, builder)
CONFIGS = {
    'default-64k': (65536, 4 * MiB, _plain),
    'v2-4k': (4096, 2 * MiB, lambda d, cs, size: _plain(d, cs, size, compat='0.10')),
    '512-refcount1': (512, MiB, lambda d, cs, size: _plain(d, cs, size, refcount_bits=1)),
    'extl2-64k': (65536, 4 * MiB, lambda d, cs, size: _plain(d, cs, size, extended_l2='on')),
    'extl2-compressed': (65536, 4 * MiB, lambda d, cs, size: _compressed(d, cs, size, extended_l2='on')),
    '2m': (2 << 20, 12 * MiB, _plain),
    'snapshots': (65536, 4 * MiB, _snapshots),
    'snapshots-4k-refcount2': (4096, MiB, _snapshots_refcount2),
    'compressed-4k': (4096, 2 * MiB, _compressed),
    'backing-qcow2': (65536, 4 * MiB, lambda d, cs, size: _backing(d, cs, size, 'qcow2')),
    'backing-raw-4k': (4096, MiB, lambda d, cs, size: _backing(d, cs, size, 'raw')),
    'prealloc-metadata': (65536, 4 * MiB, lambda d, cs, size: _plain(d, cs, size, preallocation='metadata')),
    'lazy-refcounts': (65536, 4 * MiB, lambda d, cs, size: _plain(d, cs, size, lazy_refcounts='on')),
}


@pytest.fixture(scope='module')
def starts(tmp_path_factory):
    """Each configuration's starting image, built once per module."""
    built = {}
    for name, (cs, size, builder) in CONFIGS.items():
        d = tmp_path_factory.mktemp(name)
        built[name] = builder(d, cs, size)
    return built


@st.composite
def guest_ops(draw, cs, size):
    """Writes and zero writes from 1 byte to several clusters, aligned or not."""
    ops = []
    for _op in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(['write', 'write', 'zero', 'zero-unmap']))
        align = draw(st.sampled_from([1, 512, cs]))
        length = draw(st.one_of(st.integers(1, 600), st.integers(1, 4 * cs)))
        if align > 1:
            length = max(align, length // align * align)
        length = min(length, size)
        offset = draw(st.integers(0, (size - length) // align)) * align
        ops.append((kind, offset, length, draw(st.integers(1, 255))))
    return ops


def _qemu_cmd(kind, offset, length, byte):
    return {'write': 'write -P %d %d %d' % (byte, offset, length),
            'zero': 'write -z %d %d' % (offset, length),
            'zero-unmap': 'write -z -u %d %d' % (offset, length)}[kind]


def _engine_apply(path, ops):
    with open_chain(str(path), writable=True) as chain:
        for kind, offset, length, byte in ops:
            if kind == 'write':
                chain.top.write(offset, bytes([byte]) * length)
            else:
                chain.top.write_zeroes(offset, length, unmap=kind == 'zero-unmap')


@pytest.mark.parametrize('config', sorted(CONFIGS))
@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_engine_writes_match_qemu_io(starts, config, data):
    cs, size, _builder = CONFIGS[config]
    ops = data.draw(guest_ops(cs, size), label='ops')
    start = starts[config]
    ours, theirs = start.with_name('engine.qcow2'), start.with_name('qemu.qcow2')
    shutil.copyfile(start, ours)
    shutil.copyfile(start, theirs)

    _engine_apply(ours, ops)
    qemu_io_script(theirs, [_qemu_cmd(*op) for op in ops])

    assert qemu_compare(ours, theirs), ops
    result = qemu_img_check(ours)
    assert result.clean, (result.report, ops)
    assert check(str(ours))['exit_code'] == 0
    if config.startswith('snapshots'):  # copy-on-write kept every snapshot as it was
        for name in ('s1', 's2') if config == 'snapshots' else ('s1',):
            a, b = (start.with_name(n + '.raw') for n in ('a', 'b'))
            qemu_img('convert', '-l', 'snapshot.name=' + name, '-O', 'raw', ours, a)
            qemu_img('convert', '-l', 'snapshot.name=' + name, '-O', 'raw', start, b)
            assert a.read_bytes() == b.read_bytes(), name


@pytest.mark.parametrize('config', sorted(CONFIGS))
@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_engine_batched_writes_match_qemu_io(starts, config, data):
    """Several writes handed to the writer at once (write_many, as a copy hands over a buffer's clusters: the new
    clusters among them from one allocation) read as the same writes made one by one by qemu-io, in order, even
    where they overlap or share a cluster."""
    cs, size, _builder = CONFIGS[config]
    writes = [op for op in data.draw(guest_ops(cs, size), label='ops') if op[0] == 'write']
    if data.draw(st.booleans(), label='sorted'):
        writes.sort(key=lambda op: op[1])
    start = starts[config]
    ours, theirs = start.with_name('engine-batch.qcow2'), start.with_name('qemu-batch.qcow2')
    shutil.copyfile(start, ours)
    shutil.copyfile(start, theirs)

    with open_chain(str(ours), writable=True) as chain:
        chain.top.write_many([(offset, bytes([byte]) * length) for _kind, offset, length, byte in writes])
    if writes:
        qemu_io_script(theirs, [_qemu_cmd(*op) for op in writes])

    assert qemu_compare(ours, theirs), writes
    result = qemu_img_check(ours)
    assert result.clean, (result.report, writes)
    assert check(str(ours))['exit_code'] == 0


def test_example_counts_are_recorded(record_property):
    record_property('interop_figures', ('hypothesis examples', {
        'test': 'engine writes vs qemu-io', 'per_config': EXAMPLES, 'configs': len(CONFIGS),
        'total': EXAMPLES * len(CONFIGS)}))

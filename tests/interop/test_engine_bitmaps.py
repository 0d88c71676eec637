"""Persistent dirty bitmaps after engine writes, as qemu reads them (qemu-nbd -B + qemu-img map): the
same writes by the engine and by qemu-io leave the same dirty ranges, and a crash leaves the bitmaps
flagged in-use, which qemu 7.2 then refuses to use as a backup source."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.tests.helpers.engine_worker import run_worker
from ansible_collections.backingchain.qcow2.tests.helpers.limits import examples
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    QemuError, dirty_ranges, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_io,
    qemu_io_script)

MiB = 1 << 20
SIZE = 16 * MiB
BITMAPS = ('b64k', 'b4k', 'b1m', 'disabled')
EXAMPLES = examples(10)


def bitmap_flags(img):
    return {b['name']: b['flags'] for b in qemu_img_info(img)['format-specific']['data'].get('bitmaps', [])}


@pytest.fixture(scope='module')
def start(tmp_path_factory):
    img = qemu_img_create(tmp_path_factory.mktemp('bitmaps') / 'start.qcow2', SIZE)
    qemu_img('bitmap', '--add', img, 'b64k')
    qemu_img('bitmap', '--add', '--granularity', '4096', img, 'b4k')
    qemu_img('bitmap', '--add', '--granularity', '1M', img, 'b1m')
    qemu_img('bitmap', '--add', '--disable', img, 'disabled')
    qemu_io(img, 'write -P 1 3M 100k')  # some bits qemu set already
    return img


writes = st.lists(st.tuples(st.sampled_from(['write', 'zero']), st.integers(0, SIZE - 1), st.integers(1, 300000)),
                  min_size=1, max_size=8)


def apply_both(start, ops):
    ours, theirs = start.with_name('engine.qcow2'), start.with_name('qemu.qcow2')
    shutil.copyfile(start, ours)
    shutil.copyfile(start, theirs)
    ops = [(kind, offset, min(length, SIZE - offset)) for kind, offset, length in ops]
    with open_chain(str(ours), writable=True) as chain:
        for kind, offset, length in ops:
            if kind == 'write':
                chain.top.write(offset, b'\x5e' * length)
            else:
                chain.top.write_zeroes(offset, length)
    qemu_io_script(theirs, ['write -P 0x5e %d %d' % (o, n) if k == 'write' else 'write -z %d %d' % (o, n)
                            for k, o, n in ops])
    return ours, theirs


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=writes)
def test_engine_writes_dirty_the_same_ranges_as_qemu(start, ops):
    ours, theirs = apply_both(start, ops)
    for name in BITMAPS:
        assert dirty_ranges(ours, name) == dirty_ranges(theirs, name), name
    assert bitmap_flags(ours) == bitmap_flags(theirs) == {
        'b64k': ['auto'], 'b4k': ['auto'], 'b1m': ['auto'], 'disabled': []}
    assert qemu_img_check(ours).clean


def test_written_ranges_are_dirty(start):
    ours, _theirs = apply_both(start, [('write', 5 * MiB + 100, 5000), ('zero', 9 * MiB, 200000)])
    assert dirty_ranges(ours, 'b4k') == [(3 * MiB, 102400), (5 * MiB, 8192), (9 * MiB, 200704)]
    assert dirty_ranges(ours, 'b64k') == [(3 * MiB, 131072), (5 * MiB, 65536), (9 * MiB, 262144)]
    assert dirty_ranges(ours, 'disabled') == []


def test_a_crash_leaves_the_bitmaps_in_use_and_qemu_refuses_them(tmp_image_dir, start, record_property):
    img = tmp_image_dir / 'crashed.qcow2'
    shutil.copyfile(start, img)
    proc = run_worker({'task': 'write-and-die', 'path': str(img), 'writes': [[7 * MiB, 4096]]})
    assert proc.returncode == -9

    assert bitmap_flags(img) == {'b64k': ['in-use', 'auto'], 'b4k': ['in-use', 'auto'], 'b1m': ['in-use', 'auto'],
                                 'disabled': []}
    # what qemu 7.2 makes of it: check calls the image clean ...
    result = qemu_img_check(img)
    assert result.clean, result.report
    # ... but will not let the inconsistent bitmaps be used
    with pytest.raises(QemuError, match="Bitmap 'b64k' is inconsistent and cannot be used"):
        dirty_ranges(img, 'b64k')
    with pytest.raises(QemuError, match="Cannot copy inconsistent bitmap 'b(64k|4k|1m)'"):
        qemu_img('convert', '--bitmaps', '-O', 'qcow2', img, tmp_image_dir / 'copy.qcow2')
    qemu_img('convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', img, tmp_image_dir / 'copy2.qcow2')
    assert dirty_ranges(img, 'disabled') == []
    record_property('interop_figures', ('bitmaps after a crash', {
        'qemu_check_exit': result.returncode, 'flags': 'in-use,auto', 'nbd_export': 'refused',
        'convert_bitmaps': 'refused unless --skip-broken-bitmaps'}))

    # the engine neither trusts nor "repairs" them on its next write; removing them is the way out, as in qemu
    with open_chain(str(img), writable=True) as chain:
        chain.top.write(0, b'x')
    assert bitmap_flags(img)['b64k'] == ['in-use', 'auto']
    qemu_img('bitmap', '--remove', img, 'b64k')
    assert 'b64k' not in bitmap_flags(img)
    assert qemu_img_check(img).clean


def test_example_counts_are_recorded(record_property):
    record_property('interop_figures', ('hypothesis examples', {
        'test': 'engine writes vs qemu-io, dirty bitmaps', 'per_config': EXAMPLES, 'configs': 1, 'total': EXAMPLES}))

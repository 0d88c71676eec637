"""qemu-img bitmap's operations, done by the engine and by qemu-img on copies of the same image.

Random sequences of --add (with and without -g, --disable), --remove, --clear, --enable, --disable,
--merge (within the image, from another image with -b, from one of another size) and guest writes
between them. After each sequence both copies show the same bitmaps in qemu-img info (names, flags,
granularity), the same dirty ranges read by qemu (qemu-nbd -B), and are clean under qemu-img check. An
operation qemu refuses, the engine refuses too, with qemu's words. Both ways round: the engine reads what
qemu wrote as qemu reads it, and a sequence done half by the engine and half by qemu-img ends the same.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.tests.helpers.limits import examples
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    QemuError, dirty_ranges, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_io)

MiB = 1 << 20
SIZE = 8 * MiB
NAMES = ('a', 'b', 'c')
EXAMPLES = examples(12)


def qemu_view(path):
    """{name: (flags, granularity, dirty ranges)} as qemu reads the image."""
    out = {}
    for b in qemu_img_info(path)['format-specific']['data'].get('bitmaps', []):
        out[b['name']] = (b['flags'], b['granularity'], dirty_ranges(path, b['name']))
    return out


def engine_view(path):
    """The same, as the engine reads it."""
    out = {}
    for b in api.list_bitmaps(str(path))[0]['bitmaps']:
        ranges = api.dirty_ranges(str(path), b['name'], allow_disabled=True).ranges
        out[b['name']] = (b['flags'], b['granularity'], ranges)
    return out


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp('bitmap-ops')
    start = qemu_img_create(d / 'start.qcow2', SIZE, options={'cluster_size': 4096})
    qemu_io(start, 'write -P 1 0 1M')
    qemu_img('bitmap', '--add', start, 'a')
    qemu_io(start, 'write -P 2 2M 100k', 'write -z 5M 64k')
    other = qemu_img_create(d / 'other.qcow2', SIZE)
    qemu_img('bitmap', '--add', '-g', '512', other, 'o')
    qemu_io(other, 'write 3M 1000', 'write 7M 300k')
    bigger = qemu_img_create(d / 'bigger.qcow2', 2 * SIZE)
    qemu_img('bitmap', '--add', bigger, 'o')
    return d


name = st.sampled_from(NAMES)
operations = st.one_of(
    st.tuples(st.just('add'), name, st.sampled_from([None, 512, 4096, 65536, MiB, 3000, 256]), st.booleans()),
    st.tuples(st.sampled_from(['remove', 'clear', 'enable', 'disable']), name),
    st.tuples(st.just('merge'), name, name),
    st.tuples(st.just('merge-from'), name, st.sampled_from(['other.qcow2', 'bigger.qcow2'])),
    st.tuples(st.just('write'), st.integers(0, SIZE // 512 - 1), st.integers(1, 600000), st.booleans()),
)


def qemu_does(path, op):
    """The operation with qemu-img bitmap / qemu-io; None, or qemu's error message."""
    kind = op[0]
    try:
        if kind == 'add':
            args = ['--add'] + (['-g', str(op[2])] if op[2] else []) + ([] if op[3] else ['--disable'])
            qemu_img('bitmap', *args, path, op[1])
        elif kind == 'merge':
            qemu_img('bitmap', '--merge', op[2], path, op[1])
        elif kind == 'merge-from':
            qemu_img('bitmap', '--merge', 'o', '-b', path.parent / op[2], '-F', 'qcow2', path, op[1])
        elif kind == 'write':
            offset, length = op[1] * 512, min(op[2], SIZE - op[1] * 512)
            qemu_io(path, ('write -z %d %d' if op[3] else 'write -P 9 %d %d') % (offset, length))
        else:
            qemu_img('bitmap', '--' + kind, path, op[1])
    except QemuError as exc:
        return exc.stderr.strip().splitlines()[0]
    return None


def engine_does(path, op):
    """The same with the engine; None, or its error message."""
    kind = op[0]
    try:
        if kind == 'add':
            api.change_bitmap(str(path), 'add', op[1], granularity=op[2], enabled=op[3])
        elif kind == 'merge':
            api.change_bitmap(str(path), 'merge', op[1], source=op[2])
        elif kind == 'merge-from':
            api.change_bitmap(str(path), 'merge', op[1], source='o', source_file=str(path.parent / op[2]),
                              source_format='qcow2')
        elif kind == 'write':
            offset, length = op[1] * 512, min(op[2], SIZE - op[1] * 512)
            with open_chain(str(path), writable=True) as chain:
                if op[3]:
                    chain.top.write_zeroes(offset, length)
                else:
                    chain.top.write(offset, b'\x09' * length)
        else:
            api.change_bitmap(str(path), kind, op[1])
    except api.Qcow2Error as exc:
        return str(exc)
    return None


def same_outcome(qemu_error, engine_error, op):
    assert (qemu_error is None) == (engine_error is None), (op, qemu_error, engine_error)
    if qemu_error:
        # qemu: "Operation add on bitmap a failed: Can't make bitmap 'a' persistent in '#block123': <why>"
        why = qemu_error.split('failed: ', 1)[-1].rsplit("': ", 1)[-1]
        assert why.split(' (')[0] in engine_error, (op, qemu_error, engine_error)


def copies(images, *names):
    out = []
    for n in names:
        d = images / n
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        for f in ('start.qcow2', 'other.qcow2', 'bigger.qcow2'):
            shutil.copyfile(images / f, d / f)
        out.append(d / 'start.qcow2')
    return out


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(operations, min_size=1, max_size=7))
def test_engine_and_qemu_img_bitmap_leave_the_same_bitmaps(images, ops):
    ours, theirs = copies(images, 'ours', 'theirs')
    for op in ops:
        same_outcome(qemu_does(theirs, op), engine_does(ours, op), op)
    expected = qemu_view(theirs)
    assert qemu_view(ours) == expected  # what the engine wrote, qemu reads and trusts
    assert engine_view(theirs) == expected  # what qemu wrote, the engine reads as qemu does
    assert qemu_img_check(ours).clean
    assert qemu_img_check(ours.parent / 'other.qcow2').clean  # a merge source is only read


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(operations, st.booleans()), min_size=2, max_size=7))
def test_a_sequence_done_half_by_the_engine_half_by_qemu_ends_as_qemu_alone(images, ops):
    mixed, theirs = copies(images, 'mixed', 'qemu-only')
    for op, by_engine in ops:
        expected = qemu_does(theirs, op)
        same_outcome(expected, engine_does(mixed, op) if by_engine else qemu_does(mixed, op), op)
    assert qemu_view(mixed) == qemu_view(theirs)
    assert qemu_img_check(mixed).clean


def test_the_last_bitmap_removed_takes_the_extension_and_its_autoclear_bit(tmp_path):
    ours, theirs = tmp_path / 'ours.qcow2', tmp_path / 'theirs.qcow2'
    for path in (ours, theirs):
        qemu_img_create(path, SIZE)
    api.change_bitmap(str(ours), 'add', 'x')
    api.change_bitmap(str(ours), 'remove', 'x')
    qemu_img('bitmap', '--add', theirs, 'x')
    qemu_img('bitmap', '--remove', theirs, 'x')
    from ansible_collections.backingchain.qcow2.tests.helpers.qcow2_poke import header, header_extensions
    assert header(ours)['autoclear_features'] == header(theirs)['autoclear_features'] == 0
    assert [e[1] for e in header_extensions(ours)] == [e[1] for e in header_extensions(theirs)]
    assert qemu_img_check(ours).clean


@pytest.mark.parametrize('granularity, message', [
    (512, "Too much space will be occupied by the bitmap. Use larger granularity"),
    (1 << 32, "Granularity exceeds maximum"),
])
def test_granularities_qemu_cannot_store_are_refused_with_its_words(tmp_path, granularity, message):
    big = qemu_img_create(tmp_path / 'big.qcow2', '8T')
    with pytest.raises(api.Qcow2Error, match=message):
        api.change_bitmap(str(big), 'add', 'x', granularity=granularity)
    if granularity == 512:
        with pytest.raises(QemuError, match=message):
            qemu_img('bitmap', '--add', '-g', '512', big, 'x')
    assert 'bitmaps' not in qemu_img_info(big)['format-specific']['data']
    api.change_bitmap(str(big), 'add', 'x', granularity=16384)  # 2^29 bits: the largest bitmap qemu 7.2 stores
    assert qemu_img_check(big).clean


def test_v2_images_cannot_hold_bitmaps(tmp_path):
    v2 = qemu_img_create(tmp_path / 'v2.qcow2', SIZE, options={'compat': '0.10'})
    with pytest.raises(api.Qcow2Error, match='Cannot store dirty bitmaps in qcow2 v2 files'):
        api.change_bitmap(str(v2), 'add', 'x')
    with pytest.raises(QemuError, match='Cannot store dirty bitmaps in qcow2 v2 files'):
        qemu_img('bitmap', '--add', v2, 'x')


def test_example_counts_are_recorded(record_property):
    record_property('interop_figures', ('hypothesis examples', {
        'test': 'qemu-img bitmap operations, engine vs qemu-img', 'per_config': EXAMPLES, 'configs': 2,
        'total': 2 * EXAMPLES}))

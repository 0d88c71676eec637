"""The qemu helpers behave as the interop tests rely on: results, and errors raised."""

from __future__ import annotations

import struct

import pytest

from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    CHECK_CORRUPTIONS,
    QemuError,
    dirty_ranges,
    qemu_compare,
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_img_info,
    qemu_img_json,
    qemu_img_map,
    qemu_io,
    qemu_io_script,
    qemu_io_holding,
    qemu_supports,
    raw_of,
)

MiB = 1024 * 1024


def test_create_and_info_follow_backing_chain(tmp_image_dir):
    base = qemu_img_create(tmp_image_dir / 'base.qcow2', '1M')
    top = qemu_img_create(tmp_image_dir / 'top.qcow2', backing='base.qcow2', cwd=tmp_image_dir)

    chain = qemu_img_info(top, backing_chain=True)

    assert [entry['filename'] for entry in chain] == [str(top), str(base)]
    assert chain[0]['backing-filename'] == 'base.qcow2'
    assert chain[0]['virtual-size'] == MiB
    assert qemu_img_json('info', base)['format'] == 'qcow2'
    assert 'virtual size: 1 MiB' in qemu_img('info', base)


def test_qemu_io_writes_and_verifies_patterns(tmp_image_dir):
    img = qemu_img_create(tmp_image_dir / 'a.qcow2', '1M')

    out = qemu_io(img, 'write -P 0xab 0 64k', 'read -P 0xab 0 64k')
    assert 'wrote 65536/65536 bytes at offset 0' in out

    with pytest.raises(QemuError) as err:
        qemu_io(img, 'read -P 0xcd 0 64k')
    assert err.value.returncode != 0
    assert 'Pattern verification failed' in err.value.stdout + err.value.stderr


def test_raw_of_flattens_the_whole_chain(tmp_image_dir):
    base = qemu_img_create(tmp_image_dir / 'base.qcow2', '1M')
    qemu_io(base, 'write -P 0x11 0 64k', 'write -P 0x22 128k 64k')
    top = qemu_img_create(tmp_image_dir / 'top.qcow2', backing=base)
    qemu_io(top, 'write -P 0x33 128k 4k')

    raw = raw_of(top).read_bytes()

    assert len(raw) == MiB
    assert raw[:64 * 1024] == b'\x11' * (64 * 1024)
    assert raw[128 * 1024:132 * 1024] == b'\x33' * 4096
    assert raw[132 * 1024:192 * 1024] == b'\x22' * (60 * 1024)
    assert raw[192 * 1024:] == bytes(MiB - 192 * 1024)


def test_qemu_compare_sees_guest_content_only(tmp_image_dir):
    a = qemu_img_create(tmp_image_dir / 'a.qcow2', '1M')
    b = qemu_img_create(tmp_image_dir / 'b.qcow2', '1M', options={'cluster_size': 4096})
    qemu_io(a, 'write -P 0x5a 4k 4k')
    qemu_io(b, 'write -P 0x5a 4k 4k')

    assert qemu_compare(a, b)
    assert qemu_compare(a, raw_of(a), fmt_a='qcow2', fmt_b='raw')

    qemu_io(b, 'write -P 0x5b 512k 512')
    assert not qemu_compare(a, b)


def test_qemu_img_check_reports_clean_and_corrupt_images(tmp_image_dir):
    img = qemu_img_create(tmp_image_dir / 'a.qcow2', '1M')
    qemu_io(img, 'write -P 0x01 0 64k')

    result = qemu_img_check(img)
    assert result.clean
    assert result.returncode == 0
    assert result.report['check-errors'] == 0

    # Zero the first refcount block: every cluster in use now has refcount 0.
    with open(img, 'r+b') as f:
        header = f.read(64)
        refcount_table_offset = struct.unpack_from('>Q', header, 48)[0]
        f.seek(refcount_table_offset)
        refblock_offset = struct.unpack('>Q', f.read(8))[0]
        cluster_size = 1 << struct.unpack_from('>I', header, 20)[0]
        f.seek(refblock_offset)
        f.write(bytes(cluster_size))

    result = qemu_img_check(img)
    assert not result.clean
    assert result.returncode == CHECK_CORRUPTIONS
    assert result.report['corruptions'] > 0


def test_failures_raise_with_stderr(tmp_image_dir):
    missing = tmp_image_dir / 'missing.qcow2'
    with pytest.raises(QemuError) as err:
        qemu_img('info', missing)
    assert err.value.returncode != 0
    assert str(missing) in str(err.value)

    with pytest.raises(QemuError):
        qemu_img_check(missing)


def test_qemu_io_script_runs_many_commands_and_reports_failures(tmp_image_dir):
    img = qemu_img_create(tmp_image_dir / 'a.qcow2', '1M')
    qemu_io_script(img, ['write -P %d %dk 4k' % (i + 1, 4 * i) for i in range(100)])
    qemu_io(img, 'read -P 100 396k 4k')
    with pytest.raises(QemuError):
        qemu_io_script(img, ['read -P 7 0 4k'])


def test_qemu_io_holding_keeps_the_image_open(tmp_image_dir):
    img = qemu_img_create(tmp_image_dir / 'a.qcow2', '1M')
    with qemu_io_holding(img):
        with pytest.raises(QemuError, match='Failed to get "write" lock'):
            qemu_io(img, 'read 0 512')
    qemu_io(img, 'read 0 512')  # released when the block ends
    with qemu_io_holding(img):
        with pytest.raises(QemuError, match='Failed to get "write" lock'):
            with qemu_io_holding(img):
                pass


def test_dirty_ranges_and_map(tmp_image_dir):
    img = qemu_img_create(tmp_image_dir / 'a.qcow2', '4M')
    qemu_img('bitmap', '--add', '--granularity', '4096', img, 'b0')
    qemu_io(img, 'write 1M 5000', 'write -z 3M 4k')
    assert dirty_ranges(img, 'b0') == [(MiB, 8192), (3 * MiB, 4096)]
    assert [(e['start'], e['data']) for e in qemu_img_map(img)][:2] == [(0, False), (MiB, True)]


def test_qemu_supports_probes_create_options():
    assert qemu_supports(cluster_size='4096')
    assert not qemu_supports(cluster_size='3000')

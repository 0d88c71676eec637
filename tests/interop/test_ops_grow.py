"""Grow against qemu-img resize (growth only)."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    STANDARD_CHAINS,
    assert_clean,
    build_chain,
    copy_images,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    dirty_ranges,
    qemu_compare,
    qemu_img,
    qemu_img_create,
    qemu_img_info,
    qemu_io,
)


GiB = 1024 * MiB


def _chain(tmp_path, name):
    layers = STANDARD_CHAINS[name]()
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, layers)
    return layers, images, view_of(images / layers[-1].name, tmp_path)


@pytest.mark.parametrize('name', ['c64k-v3', 'c512-v3', 'c4k-v2', 'c2M-v3', 'c64k-extl2', 'snapshots'])
def test_grow_like_qemu_resize(tmp_path, name):
    layers, images, before = _chain(tmp_path, name)
    top = images / layers[-1].name
    theirs = copy_images(images, tmp_path / 'theirs')
    new_size = 600 * MiB + 512  # the L1 table must grow for every cluster size but 2M

    assert api.grow_image(str(top), new_size) is True
    qemu_img('resize', '-q', '-f', 'qcow2', theirs / top.name, str(new_size))

    assert qemu_img_info(top)['virtual-size'] == new_size
    assert qemu_compare(top, theirs / top.name, strict=False)
    assert same_view(top, before)
    assert_clean([top])
    assert api.grow_image(str(top), new_size) is False


@pytest.mark.parametrize('compat', ['1.1', '0.10'])
def test_grow_an_overlay_shorter_than_its_backing_file_reads_zeros_there(tmp_path, compat):
    """qemu iotest 274: growing must not expose the backing file's data beyond the old end."""
    base = qemu_img_create(tmp_path / 'base.qcow2', 4 * MiB)
    qemu_io(base, 'write -P 1 0 4M')
    over = qemu_img_create(tmp_path / 'over.qcow2', MiB + 512, backing='base.qcow2',
                           options={'compat': compat, 'cluster_size': 4096}, cwd=tmp_path)
    qemu_io(over, 'write -P 2 64k 4k')

    assert api.grow_image(str(over), 3 * MiB) is True

    qemu_io(over, 'read -P 1 0 64k', 'read -P 2 64k 4k', 'read -P 1 68k %d' % (MiB + 512 - 68 * 1024),
            'read -P 0 %d %d' % (MiB + 512, 2 * MiB - 512))
    assert_clean([over])
    if compat == '1.1':
        theirs = qemu_img_create(tmp_path / 'theirs.qcow2', MiB + 512, backing='base.qcow2',
                                 options={'compat': compat, 'cluster_size': 4096}, cwd=tmp_path)
        qemu_io(theirs, 'write -P 2 64k 4k')
        qemu_img('resize', '-q', theirs, str(3 * MiB))
        assert qemu_compare(over, theirs, strict=True)


def test_grow_refuses_to_shrink_and_changes_nothing(tmp_path):
    layers, images, _before = _chain(tmp_path, 'two-deep')
    top = images / layers[-1].name
    with open(top, 'rb') as f:
        content = f.read()

    with pytest.raises(InvalidArgumentError, match='shrinking it to 1048576 bytes is refused'):
        api.grow_image(str(top), MiB)
    with pytest.raises(InvalidArgumentError, match='multiple of 512'):
        api.grow_image(str(top), 16 * MiB + 1)

    with open(top, 'rb') as f:
        assert f.read() == content


def test_grow_resizes_persistent_bitmap_tables(tmp_path):
    """qemu opens an image only if each bitmap table is exactly as large as the size needs: growing past what one
    table cluster covers must grow the tables, and the bits set so far must survive."""
    img = qemu_img_create(tmp_path / 'img.qcow2', MiB)
    qemu_img('bitmap', '--add', '-g', '512', img, 'fine')  # one 64k table cluster covers 256 MiB at this granularity
    qemu_img('bitmap', '--add', img, 'coarse')
    qemu_img('bitmap', '--add', '--disable', '-g', '512', img, 'frozen')
    qemu_io(img, 'write -P 1 4k 4k')
    theirs = copy_images(tmp_path, tmp_path / 'qemu') / 'img.qcow2'

    assert api.grow_image(str(img), GiB + 512) is True
    qemu_img('resize', '-q', theirs, str(GiB + 512))

    assert_clean([img])  # qemu-img check opens the image, loading every bitmap
    for name in ('fine', 'coarse', 'frozen'):
        assert dirty_ranges(img, name) == dirty_ranges(theirs, name), name
    qemu_io(img, 'write -P 2 %d 4k' % (700 * MiB))
    assert dirty_ranges(img, 'fine') == [(4096, 4096), (700 * MiB, 4096)]
    assert dirty_ranges(img, 'frozen') == []
    assert_clean([img])

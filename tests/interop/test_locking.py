"""Image locking against a real qemu process holding the image, both ways round, with qemu's messages."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import ImageLockedError
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    QemuError, qemu_img, qemu_img_create, qemu_io, qemu_io_holding, qemu_io_send)

WRITE = 'Failed to get "write" lock\nIs another process using the image [%s]?'
SHARED_WRITE = 'Failed to get shared "write" lock\nIs another process using the image [%s]?'


@pytest.fixture
def image(tmp_image_dir):
    path = qemu_img_create(tmp_image_dir / 'a.qcow2', '4M')
    qemu_io(path, 'write -P 0x61 0 64k')
    return path


def engine_open_error(path, **kwargs):
    with pytest.raises(ImageLockedError) as err:
        open_chain(str(path), **kwargs)
    return str(err.value)


def test_qemu_writer_blocks_engine_writer_and_reader(image):
    # writethrough: qemu flushes data and metadata after each write (a flush command would print nothing to wait for)
    with qemu_io_holding(image, options=['-t', 'writethrough']) as qemu:
        assert engine_open_error(image, writable=True) == WRITE % image
        assert engine_open_error(image) == SHARED_WRITE % image
        qemu_io_send(qemu, 'write -P 0x62 0 4k', 'wrote 4096/4096')
        with open_chain(str(image), force_share=True) as chain:  # qemu-img -U: reads, takes no lock
            assert chain.top.read(0, 4096) == b'\x62' * 4096
    with open_chain(str(image), writable=True):
        pass  # the locks went away with qemu


def test_qemu_reader_blocks_only_engine_writers(image):
    with qemu_io_holding(image, read_only=True):
        assert engine_open_error(image, writable=True) == WRITE % image
        with open_chain(str(image)) as chain:
            assert chain.top.read(0, 4) == b'aaaa'


def test_running_vm_style_holder_of_an_overlay_protects_its_backing_file(tmp_image_dir, image):
    top = qemu_img_create(tmp_image_dir / 'top.qcow2', backing=image.name, cwd=tmp_image_dir)
    with qemu_io_holding(top):
        assert engine_open_error(image, writable=True) == WRITE % image
        with open_chain(str(image)):
            pass  # reading the base of a running VM is fine


QEMU_USERS = {
    'qemu-io': (lambda img: qemu_io(img, 'read 0 512'), 'Failed to get "write" lock'),
    'qemu-io -r': (lambda img: qemu_io(img, 'read 0 512', options=['-r']), 'Failed to get shared "write" lock'),
    'qemu-img info': (lambda img: qemu_img('info', img), 'Failed to get shared "write" lock'),
    'qemu-img check': (lambda img: qemu_img('check', img), 'Failed to get shared "write" lock'),
    'qemu-img snapshot -c': (lambda img: qemu_img('snapshot', '-c', 's', img), 'Failed to get "write" lock'),
}


@pytest.mark.parametrize('user', sorted(QEMU_USERS))
def test_engine_writer_blocks_qemu(image, user):
    use, message = QEMU_USERS[user]
    with open_chain(str(image), writable=True):
        with pytest.raises(QemuError) as err:
            use(image)
        assert message in err.value.stderr and 'Is another process using the image' in err.value.stderr
        assert 'virtual size: 4 MiB' in qemu_img('info', '-U', image)  # force-share still reads


def test_engine_reader_blocks_only_qemu_writers(image):
    with open_chain(str(image)):
        with pytest.raises(QemuError, match='Failed to get "write" lock'):
            qemu_io(image, 'write 0 512')
        assert qemu_io(image, 'read -P 0x61 0 512', options=['-r'])
        qemu_img('info', image)


def test_engine_writer_on_an_overlay_protects_its_backing_file_from_qemu(tmp_image_dir, image):
    top = qemu_img_create(tmp_image_dir / 'top.qcow2', backing=image.name, cwd=tmp_image_dir)
    with open_chain(str(top), writable=True):
        with pytest.raises(QemuError, match='Failed to get "write" lock'):
            qemu_io(image, 'write 0 512')
        qemu_io(image, 'read 0 512', options=['-r'])

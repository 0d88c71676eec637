"""Image locking with qemu's bytes and messages: two engine opens of one image conflict as qemu's would."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import locking
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import create_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import ImageLockedError, InvalidArgumentError
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import make_image

WRITE_CONFLICT = 'Failed to get "write" lock\nIs another process using the image [%s]?'
SHARED_WRITE_CONFLICT = 'Failed to get shared "write" lock\nIs another process using the image [%s]?'


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=1 << 20))
    return path


def test_lock_bytes_are_what_qemu_takes():
    # a writer: consistent read, write, resize held; write and resize not shared (block/file-posix.c)
    assert locking.lock_bytes(locking.WRITE_PERMS, locking.WRITE_SHARED) == [100, 101, 103, 201, 203]
    # a reader (qemu-img info, a backing file of a running VM): read held; write and resize not shared
    assert locking.lock_bytes(locking.READ_PERMS, locking.READ_SHARED) == [100, 201, 203]


@pytest.mark.parametrize('first, second, message', [
    (True, True, WRITE_CONFLICT),
    (False, True, WRITE_CONFLICT),
    (True, False, SHARED_WRITE_CONFLICT),
])
def test_conflicting_opens(image, first, second, message):
    with open_chain(image, writable=first):
        with pytest.raises(ImageLockedError) as err:
            open_chain(image, writable=second)
    assert str(err.value) == message % image


def test_readers_share(image):
    with open_chain(image), open_chain(image):
        pass


def test_force_share_reads_under_a_writer_and_takes_no_lock(image):
    with open_chain(image, writable=True) as writer:
        writer.top.write(0, b'x' * 512)
        writer.top.flush()
        with open_chain(image, force_share=True) as reader:
            assert reader.top.read(0, 1) == b'x'
        assert locking.holders_conflict(image, write=False) == SHARED_WRITE_CONFLICT % image


def test_force_share_is_for_reading_only(image):
    with pytest.raises(InvalidArgumentError, match='force_share'):
        open_chain(image, writable=True, force_share=True)


def test_locks_are_released_on_close_and_on_failed_open(image):
    with open_chain(image, writable=True):
        with pytest.raises(ImageLockedError):
            open_chain(image, writable=True)
        assert locking.holders_conflict(image, write=True) == WRITE_CONFLICT % image
    assert locking.holders_conflict(image, write=True) is None
    with open_chain(image, writable=True):
        pass


def test_backing_files_are_read_locked(tmp_path, image):
    top = str(tmp_path / 'top.qcow2')
    create_image(top, CreateOptions(backing_file='a.qcow2', backing_format='qcow2'))
    with open_chain(top, writable=True):
        with pytest.raises(ImageLockedError, match='Failed to get "write" lock'):
            open_chain(image, writable=True)
        with open_chain(image):
            pass


def test_create_refuses_to_clobber_an_image_in_use(image):
    with open_chain(image):
        with pytest.raises(ImageLockedError):
            create_image(image, CreateOptions(size=1 << 20), overwrite=True)
    with open_chain(image) as chain:
        assert chain.top.size == 1 << 20


def test_locks_conflict_as_qemus_do(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    locking.refuse_if_held(path)
    with locking.held(path, write=False):
        locking.refuse_if_held(path, write=False)  # readers share
        with pytest.raises(ImageLockedError) as err:
            locking.refuse_if_held(path)
        assert "Is another process using the image" in str(err.value)
    with locking.held(path):
        with pytest.raises(ImageLockedError):
            locking.refuse_if_held(path, write=False)
    locking.refuse_if_held(path)

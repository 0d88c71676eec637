"""Locks while an operation runs: qemu cannot write what the engine writes or reads, and may share what it only reads."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB, Layer, build_chain, same_view, view_of
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import QemuError, qemu_img, qemu_io, qemu_io_holding

CHAIN = [
    Layer('base.qcow2', 16 * MiB, steps=('write -P 1 0 8M',)),
    Layer('mid.qcow2', steps=('write -P 2 4M 4M',)),
    Layer('top.qcow2', steps=('write -P 3 0 12M',)),
]


@pytest.fixture
def chain(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, CHAIN)
    return images


def _qemu_cannot_write(path):
    with pytest.raises(QemuError, match='Failed to get "write" lock'):
        qemu_io(path, 'write -P 9 0 512')


def _qemu_cannot_read_consistently(path):
    """A plain qemu reader does not share writes, so it fails while the engine writes; -U (force share) works."""
    with pytest.raises(QemuError, match='lock'):
        qemu_img('info', path)
    qemu_img('info', '-U', path)


def test_commit_locks_base_and_top_while_it_runs(chain):
    seen = []

    def during(_done):
        if not seen:
            _qemu_cannot_write(chain / 'mid.qcow2')  # the base being written
            _qemu_cannot_read_consistently(chain / 'mid.qcow2')
            _qemu_cannot_write(chain / 'top.qcow2')  # the active image, emptied at the end
            _qemu_cannot_write(chain / 'base.qcow2')  # read through: nobody may change it meanwhile
            seen.append(True)

    api.commit(str(chain / 'top.qcow2'), progress=during)
    assert seen
    qemu_io(chain / 'mid.qcow2', 'write -P 9 0 512')  # released afterwards


def test_convert_locks_its_source_chain_against_writers_only(chain, tmp_path):
    seen = []

    def during(_done):
        if not seen:
            for name in ('top.qcow2', 'mid.qcow2', 'base.qcow2'):
                _qemu_cannot_write(chain / name)
                qemu_img('info', chain / name)  # readers are welcome: the engine only reads the source
            seen.append(True)

    before = view_of(chain / 'top.qcow2', tmp_path)
    api.convert(str(chain / 'top.qcow2'), str(tmp_path / 'flat.qcow2'), progress=during)
    assert seen
    assert same_view(tmp_path / 'flat.qcow2', before)


@pytest.mark.parametrize('held', ['top.qcow2', 'base.qcow2'])
def test_convert_shares_a_source_a_vm_only_reads(chain, tmp_path, held):
    with qemu_io_holding(chain / held, read_only=True):
        api.convert(str(chain / 'top.qcow2'), str(tmp_path / 'flat.qcow2'))


@pytest.mark.parametrize('onto', ['base.qcow2', 'other.qcow2'])
def test_safe_rebase_shares_the_backing_files_it_only_reads(chain, onto):
    qemu_img('create', '-q', '-f', 'qcow2', chain / 'other.qcow2', '16M')
    with qemu_io_holding(chain / onto, read_only=True), qemu_io_holding(chain / 'mid.qcow2', read_only=True):
        assert api.rebase(str(chain / 'top.qcow2'), onto, 'qcow2').changed is True

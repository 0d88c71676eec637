# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import (
    chain_entry,
    read_chain,
    underscore_keys,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import ChainPolicy
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import FormatError, Qcow2Error
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import make_image


def test_underscore_keys_recurses_and_keeps_values():
    qemu = {"virtual-size": 1, "format-specific": {"type": "qcow2", "data": {"refcount-bits": 16}},
            "snapshots": [{"vm-state-size": 0, "name": "a-b"}], "filename": "x-y.qcow2"}
    assert underscore_keys(qemu) == {"virtual_size": 1, "format_specific": {"type": "qcow2", "data": {"refcount_bits": 16}},
                                     "snapshots": [{"vm_state_size": 0, "name": "a-b"}], "filename": "x-y.qcow2"}


def test_chain_entry_of_a_standalone_image():
    entry = chain_entry({"filename": "/i/a.qcow2", "format": "qcow2", "virtual-size": 512})
    assert entry == {"filename": "/i/a.qcow2", "format": "qcow2", "virtual_size": 512, "backing_filename": None,
                     "backing_format": None}


def test_read_chain_refuses_what_is_not_qcow2(tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(4096))
    with pytest.raises(FormatError):
        read_chain(str(raw), ChainPolicy())
    with pytest.raises(Qcow2Error) as err:
        read_chain(str(tmp_path / "missing.qcow2"), ChainPolicy())
    assert "No such file or directory" in str(err.value)


def test_read_chain_top_first(tmp_path):
    base = make_image(tmp_path / "base.qcow2")
    top = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    assert [info["filename"] for info in read_chain(top, ChainPolicy())] == [top, base]
    assert [info["filename"] for info in read_chain(top, ChainPolicy(), backing_chain=False)] == [top]

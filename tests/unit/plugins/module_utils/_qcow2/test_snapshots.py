# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Whether reverting to an internal snapshot would change anything (qcow2_snapshot state=reverted)."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, make_image, write


def _id(path, name):
    return next(sn["id"] for sn in api.list_snapshots(path) if sn["name"] == name)


def test_matches_until_the_guest_writes_and_again_after_revert(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=MIB, extended_l2=True)
    write(path, 0, b"\x01" * 70000)
    api.create_snapshot(path, "s")
    assert api.snapshot_matches(path, _id(path, "s")) == (True, MIB)
    write(path, 600000, b"\x02")
    assert api.snapshot_matches(path, _id(path, "s")) == (False, MIB)
    api.revert_snapshot(path, "s")
    assert api.snapshot_matches(path, _id(path, "s")) == (True, MIB)


def test_an_empty_snapshot_matches_an_empty_image_only(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=MIB)
    api.create_snapshot(path, "empty")
    assert api.snapshot_matches(path, _id(path, "empty"))[0]
    write(path, 0, b"\x03" * 512)
    assert not api.snapshot_matches(path, _id(path, "empty"))[0]


def test_a_different_size_never_matches(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=MIB)
    api.create_snapshot(path, "small")
    api.grow_image(path, 2 * MIB)
    assert api.snapshot_matches(path, _id(path, "small")) == (False, MIB)

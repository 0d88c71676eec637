# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_snapshot
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, guest_view, info, make_image, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import converge, run_failed, run_ok


def _names(path):
    return [sn["name"] for sn in api.list_snapshots(path)]


def test_internal_present_absent(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    _c, real, _c2, _r2 = converge(qcow2_snapshot, {"path": path, "name": "s1"}, tmp_path)
    assert real["snapshot"]["name"] == "s1"
    assert _names(path) == ["s1"]
    converge(qcow2_snapshot, {"path": path, "name": "s1", "state": "absent"}, tmp_path)
    assert _names(path) == []
    assert api.check(path)["exit_code"] == 0


def test_absent_removes_every_snapshot_of_the_name_and_matches_names_not_ids(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    api.create_snapshot(path, "1x")
    api.create_snapshot(path, "dup")
    api.create_snapshot(path, "dup")
    # snapshot id 1 exists, but no snapshot is named "1": nothing to delete
    assert run_ok(qcow2_snapshot, {"path": path, "name": "1", "state": "absent"})["changed"] is False
    converge(qcow2_snapshot, {"path": path, "name": "dup", "state": "absent"}, tmp_path)
    assert _names(path) == ["1x"]


def test_reverted(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=MIB)
    write(path, 0, b"\x01" * 65536)
    api.create_snapshot(path, "s1")
    # nothing written since the snapshot: already its state
    assert run_ok(qcow2_snapshot, {"path": path, "name": "s1", "state": "reverted"})["changed"] is False
    write(path, 0, b"\x02" * 4096)
    converge(qcow2_snapshot, {"path": path, "name": "s1", "state": "reverted"}, tmp_path)
    assert guest_view(path)[:65536] == b"\x01" * 65536
    assert api.check(path)["exit_code"] == 0


def test_reverted_restores_the_snapshots_size(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=MIB)
    api.create_snapshot(path, "small")
    api.grow_image(path, 2 * MIB)
    converge(qcow2_snapshot, {"path": path, "name": "small", "state": "reverted"}, tmp_path)
    assert info(path)["virtual-size"] == MIB


def test_reverted_needs_exactly_one_snapshot_of_the_name(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    assert "no internal snapshot named 'x'" in run_failed(qcow2_snapshot, {"path": path, "name": "x", "state": "reverted"})["msg"]
    api.create_snapshot(path, "x")
    api.create_snapshot(path, "x")
    assert "ambiguous" in run_failed(qcow2_snapshot, {"path": path, "name": "x", "state": "reverted"})["msg"]


def test_diff_lists_snapshot_names(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    result = run_ok(qcow2_snapshot, {"path": path, "name": "s1"}, check_mode=True, diff=True)
    assert result["diff"]["before"]["snapshots"] == []
    assert result["diff"]["after"]["snapshots"] == ["s1"]
    assert result["diff"]["after"]["chain"][0]["filename"] == path


def test_external_converges(tmp_path):
    base = make_image(tmp_path / "base.qcow2", size=2 * MIB)
    write(base, 0, b"\x44" * 512)
    overlay = str(tmp_path / "overlay.qcow2")
    _c, real, _c2, real2 = converge(qcow2_snapshot, {"path": base, "type": "external", "overlay": overlay}, tmp_path)
    assert real["overlay"]["backing_filename"] == os.path.abspath(base)
    assert real["overlay"]["backing_filename_format"] == "qcow2"
    assert real["overlay"]["virtual_size"] == 2 * MIB
    assert [image["filename"] for image in real2["chain"]] == [overlay, base]
    assert guest_view(overlay) == guest_view(base)


def test_external_of_a_raw_image_records_raw(tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x55" * MIB)
    overlay = str(tmp_path / "overlay.qcow2")
    converge(qcow2_snapshot, {"path": str(raw), "type": "external", "overlay": overlay}, tmp_path)
    assert info(overlay)["backing-filename-format"] == "raw"
    assert guest_view(overlay) == b"\x55" * MIB


def test_external_refuses_an_overlay_of_something_else(tmp_path):
    base = make_image(tmp_path / "base.qcow2")
    other = make_image(tmp_path / "other.qcow2")
    result = run_failed(qcow2_snapshot, {"path": base, "type": "external", "overlay": other})
    assert "is not an overlay of" in result["msg"]
    result = run_failed(qcow2_snapshot, {"path": base, "type": "external", "overlay": base})
    assert "must be a new file" in result["msg"]
    result = run_failed(qcow2_snapshot, {"path": base, "type": "external", "overlay": other, "state": "absent"})
    assert "only state=present" in result["msg"]


def test_required_options(tmp_path):
    base = make_image(tmp_path / "base.qcow2")
    assert "name" in run_failed(qcow2_snapshot, {"path": base})["msg"]
    assert "overlay" in run_failed(qcow2_snapshot, {"path": base, "type": "external"})["msg"]


def test_locked_image(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    api.create_snapshot(path, "s1")
    write(path, 0, b"\x09" * 512)
    overlay = str(tmp_path / "overlay.qcow2")
    with api.open_chain(path, fmt="qcow2", writable=True):
        for args in ({"name": "s2"}, {"name": "s1", "state": "absent"}, {"name": "s1", "state": "reverted"},
                     {"type": "external", "overlay": overlay}):
            for check_mode in (True, False):
                result = run_failed(qcow2_snapshot, dict(args, path=path), check_mode=check_mode)
                assert 'Failed to get "write" lock' in result["msg"], result["msg"]
        assert run_ok(qcow2_snapshot, {"path": path, "name": "s1"})["changed"] is False
    assert not os.path.exists(overlay)
    assert _names(path) == ["s1"]


def test_reverted_is_refused_while_the_image_has_bitmaps_also_in_check_mode(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=MIB)
    api.create_snapshot(path, "s1")
    write(path, 0, b"\x02" * 4096)
    api.change_bitmap(path, "add", "b", enabled=False)
    for check_mode in (True, False):
        failed = run_failed(qcow2_snapshot, {"path": path, "name": "s1", "state": "reverted"}, check_mode=check_mode)
        assert "Device has active dirty bitmaps (b)" in failed["msg"]
    api.change_bitmap(path, "remove", "b")
    converge(qcow2_snapshot, {"path": path, "name": "s1", "state": "reverted"}, tmp_path)

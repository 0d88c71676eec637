# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import stat

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_image
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, guest_view, info, make_image, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import converge, run_failed, run_module, run_ok


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_converges(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    check1, real1, _check2, real2 = converge(qcow2_image, {"path": path, "size": "10M"}, tmp_path)
    assert check1["changed"] and "image" not in check1
    assert real1["image"]["virtual_size"] == 10 * MIB
    assert real2["image"]["cluster_size"] == 65536
    assert real2["image"]["format_specific"]["data"]["compat"] == "1.1"
    assert os.listdir(str(tmp_path)) == ["disk.qcow2"]  # no temporary file left behind


def test_new_image_gets_the_default_mode_for_new_files(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    umask = os.umask(0o027)
    try:
        run_ok(qcow2_image, {"path": path, "size": "1M"})
    finally:
        os.umask(umask)
    assert _mode(path) == 0o640


def test_mode_is_applied_and_converges(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    os.chmod(path, 0o644)
    _check1, real1, _check2, _real2 = converge(qcow2_image, {"path": path, "mode": "0600"}, tmp_path)
    assert real1["changed"]
    assert _mode(path) == 0o600


def test_options_are_written(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    args = {"path": path, "size": "2M", "cluster_size": "16K", "compat": "0.10", "refcount_bits": 16}
    converge(qcow2_image, args, tmp_path)
    image = info(path)
    assert image["cluster-size"] == 16384
    assert image["format-specific"]["data"]["compat"] == "0.10"


def test_overlay_defaults_to_the_backing_size_and_records_the_format(tmp_path):
    make_image(tmp_path / "base.qcow2", size=3 * MIB)
    path = str(tmp_path / "top.qcow2")
    converge(qcow2_image, {"path": path, "backing_file": "base.qcow2"}, tmp_path)
    image = info(path)
    assert image["virtual-size"] == 3 * MIB
    assert image["backing-filename"] == "base.qcow2"
    assert image["backing-filename-format"] == "qcow2"


def test_overlay_is_unchanged_when_the_backing_is_named_differently_but_is_the_same_file(tmp_path):
    make_image(tmp_path / "base.qcow2")
    path = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    result = run_ok(qcow2_image, {"path": path, "backing_file": str(tmp_path / "base.qcow2")})
    assert result["changed"] is False


def test_grow_converges_and_keeps_data(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=MIB)
    write(path, 0, b"\x5a" * 4096)
    converge(qcow2_image, {"path": path, "size": "2M"}, tmp_path)
    view = guest_view(path)
    assert len(view) == 2 * MIB and view[:4096] == b"\x5a" * 4096


def test_shrink_is_refused(tmp_path):
    path = make_image(tmp_path / "disk.qcow2", size=2 * MIB)
    for check_mode in (True, False):
        result = run_failed(qcow2_image, {"path": path, "size": "1M", "force": True}, check_mode=check_mode)
        assert "shrink" in result["msg"]
    assert info(path)["virtual-size"] == 2 * MIB


def test_lazy_refcounts_change_in_place(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    write(path, 0, b"\x01" * 65536)
    converge(qcow2_image, {"path": path, "lazy_refcounts": True}, tmp_path)
    assert info(path)["format-specific"]["data"]["lazy-refcounts"] is True
    assert guest_view(path)[:65536] == b"\x01" * 65536
    assert api.check(path)["exit_code"] == 0


def test_fixed_difference_fails_without_force(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    result = run_failed(qcow2_image, {"path": path, "cluster_size": "2M"})
    assert "cluster_size is 65536, not 2097152" in result["msg"]
    assert "force=true" in result["msg"]


def test_force_recreates_keeping_unset_properties_and_mode(tmp_path):
    make_image(tmp_path / "base.qcow2", size=2 * MIB)
    path = make_image(tmp_path / "top.qcow2", backing="base.qcow2", size=3 * MIB)
    write(path, 0, b"\x77" * 65536)
    os.chmod(path, 0o600)
    converge(qcow2_image, {"path": path, "cluster_size": "128K", "force": True}, tmp_path)
    image = info(path)
    assert image["cluster-size"] == 131072
    assert image["virtual-size"] == 3 * MIB
    assert image["backing-filename"] == "base.qcow2"
    assert guest_view(path)[:65536] == bytes(65536)  # the data went with the old image
    assert _mode(path) == 0o600
    assert sorted(os.listdir(str(tmp_path))) == ["base.qcow2", "top.qcow2"]


def test_different_backing_points_to_qcow2_rebase(tmp_path):
    make_image(tmp_path / "a.qcow2")
    make_image(tmp_path / "b.qcow2")
    path = make_image(tmp_path / "top.qcow2", backing="a.qcow2")
    result = run_failed(qcow2_image, {"path": path, "backing_file": "b.qcow2"})
    assert "qcow2_rebase" in result["msg"]
    result = run_failed(qcow2_image, {"path": path, "backing_file": ""})
    assert "qcow2_rebase" in result["msg"]


def test_copy_from_source_is_standalone_with_the_same_guest_view(tmp_path):
    make_image(tmp_path / "base.qcow2", size=2 * MIB)
    write(tmp_path / "base.qcow2", 0, b"\x11" * 100000)
    top = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    write(top, 65536, b"\x22" * 70000)
    path = str(tmp_path / "copy.qcow2")
    converge(qcow2_image, {"path": path, "source": top, "compress": True}, tmp_path)
    assert "backing-filename" not in info(path)
    assert guest_view(path) == guest_view(top)


def test_copy_grows_to_a_larger_size(tmp_path):
    source = make_image(tmp_path / "src.qcow2", size=MIB)
    write(source, 0, b"\x33" * 512)
    path = str(tmp_path / "copy.qcow2")
    converge(qcow2_image, {"path": path, "source": source, "size": "2M"}, tmp_path)
    view = guest_view(path)
    assert len(view) == 2 * MIB and view[:512] == b"\x33" * 512


def test_absent_converges(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    converge(qcow2_image, {"path": path, "state": "absent"}, tmp_path)
    assert not os.path.exists(path)


def test_absent_refuses_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    result = run_failed(qcow2_image, {"path": str(path), "state": "absent"})
    assert "not a qcow2 image" in result["msg"]
    assert path.exists()


def test_diff_shows_the_chain(tmp_path):
    make_image(tmp_path / "base.qcow2", size=MIB)
    path = str(tmp_path / "top.qcow2")
    result = run_ok(qcow2_image, {"path": path, "backing_file": "base.qcow2"}, check_mode=True, diff=True)
    assert result["diff"]["before"] == {"path": path, "state": "absent"}
    chain = result["diff"]["after"]["chain"]
    assert [entry["filename"] for entry in chain] == [path, str(tmp_path / "base.qcow2")]
    assert chain[0]["backing_format"] == "qcow2" and chain[0]["virtual_size"] == MIB


def test_errors_are_messages(tmp_path):
    base = make_image(tmp_path / "base.qcow2")
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(MIB))
    cases = [
        ({"path": str(tmp_path / "x.qcow2")}, "size is required"),
        ({"path": str(tmp_path / "no" / "x.qcow2"), "size": "1M"}, "does not exist"),
        ({"path": str(tmp_path / "x.qcow2"), "backing_file": "missing.qcow2"}, "No such file"),
        ({"path": str(tmp_path / "x.qcow2"), "backing_file": "base.qcow2", "backing_format": "raw"}, "backing_format is raw"),
        ({"path": str(tmp_path / "x.qcow2"), "backing_file": "disk.raw"}, "not a qcow2 image"),
        ({"path": str(raw), "size": "1M"}, "not a qcow2 image"),
        ({"path": str(tmp_path / "x.qcow2"), "size": "lots"}, "cannot read"),
        ({"path": str(tmp_path / "x.qcow2"), "size": "1000"}, "multiple of 512"),
        ({"path": str(tmp_path / "x.qcow2"), "backing_file": base, "allowed_backing_dirs": ["/nonexistent"]},
         "outside the allowed directories"),
        ({"path": str(tmp_path / "x.qcow2"), "size": "1M", "compat": "0.10", "lazy_refcounts": True}, "compatibility level"),
    ]
    for args, message in cases:
        for check_mode in (True, False):
            result = run_failed(qcow2_image, args, check_mode=check_mode)
            assert message in result["msg"], (args, result["msg"])
    assert sorted(os.listdir(str(tmp_path))) == ["base.qcow2", "disk.raw"]


def test_a_locked_image_is_not_changed(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    with api.open_chain(path, fmt="qcow2", writable=True):  # holds qemu's write lock, as a running VM does
        for args in ({"path": path, "size": "8M"}, {"path": path, "state": "absent"},
                     {"path": path, "cluster_size": "2M", "force": True}):
            for check_mode in (True, False):
                result = run_failed(qcow2_image, args, check_mode=check_mode)
                assert 'Failed to get "write" lock' in result["msg"]
        # asking for what already is true reads without locks and succeeds
        assert run_module(qcow2_image, {"path": path, "size": "4M"})["changed"] is False
    assert info(path)["virtual-size"] == 4 * MIB

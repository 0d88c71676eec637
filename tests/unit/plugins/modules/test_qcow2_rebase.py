# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.backing_name import set_backing
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_rebase
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, guest_view, info, make_image, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import converge, run_failed, run_ok


def _overlay(tmp_path):
    base = make_image(tmp_path / "base.qcow2", size=MIB)
    write(base, 0, b"\x0b" * 200000)
    top = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    write(top, 4096, b"\x0c" * 4096)
    return base, top


def test_safe_rebase_onto_another_base_keeps_the_guest_view(tmp_path):
    _base, top = _overlay(tmp_path)
    other = make_image(tmp_path / "other.qcow2", size=MIB)
    write(other, 100000, b"\x0d" * 50000)
    view = guest_view(top)
    _c, real1, _c2, real2 = converge(qcow2_rebase, {"path": top, "backing_file": "other.qcow2"}, tmp_path)
    assert real1["old_backing"] == "base.qcow2" and real1["new_backing"] == "other.qcow2"
    assert real1["header_only"] is False and real1["bytes_copied"] > 0
    assert real2["image"]["backing_filename"] == "other.qcow2"
    assert guest_view(top) == view
    assert api.check(top)["exit_code"] == 0


def test_flatten(tmp_path):
    _base, top = _overlay(tmp_path)
    view = guest_view(top)
    converge(qcow2_rebase, {"path": top, "backing_file": ""}, tmp_path)
    assert "backing-filename" not in info(top)
    assert guest_view(top) == view


def _three_deep(tmp_path):
    """base <- mid <- top: mid holds data, a zero range and an all-zero data cluster; base an all-zero data cluster."""
    base = make_image(tmp_path / "base.qcow2", size=MIB)
    write(base, 0, b"\x0b" * 65536)
    write(base, 131072, bytes(65536))  # data that happens to be zeros
    mid = make_image(tmp_path / "mid.qcow2", backing="base.qcow2")
    write(mid, 65536, b"\x0c" * 70000)
    write(mid, 327680, bytes(65536))
    with api.open_chain(mid, fmt="qcow2", writable=True) as chain:
        chain.top.write_zeroes(0, 4096)  # hides part of base's data
    top = make_image(tmp_path / "top.qcow2", backing="mid.qcow2")
    write(top, 65536, b"\x0d" * 4096)
    return base, mid, top


def _check_then_real(args):
    check = run_ok(qcow2_rebase, args, check_mode=True)
    real = run_ok(qcow2_rebase, args)
    assert check["changed"] and real["changed"] and real["bytes_estimated"] is False
    return check, real


def test_check_mode_plans_the_bytes_exactly_onto_an_image_of_the_chain(tmp_path):
    base, _mid, top = _three_deep(tmp_path)
    view = guest_view(top)
    check, real = _check_then_real({"path": top, "backing_file": "base.qcow2"})
    assert check["bytes_estimated"] is False
    assert check["bytes_copied"] == real["bytes_copied"] > 0
    assert guest_view(top) == view and info(top)["backing-filename"] == "base.qcow2"
    assert base


def test_check_mode_gives_an_upper_bound_onto_an_image_outside_the_chain(tmp_path):
    _base, _mid, top = _three_deep(tmp_path)
    other = make_image(tmp_path / "other.qcow2", size=MIB)
    write(other, 65536, b"\x0c" * 65536)  # reads like the chain in part of that cluster: compared, not all copied
    view = guest_view(top)
    check, real = _check_then_real({"path": top, "backing_file": "other.qcow2"})
    assert check["bytes_estimated"] is True and check["bytes_copied"] > real["bytes_copied"] > 0
    assert guest_view(top) == view


def test_check_mode_gives_an_upper_bound_when_flattening(tmp_path):
    _base, _mid, top = _three_deep(tmp_path)
    view = guest_view(top)
    check, real = _check_then_real({"path": top, "backing_file": ""})
    # the all-zero data clusters of base and mid are found, and skipped, only by reading them
    assert check["bytes_estimated"] is True and check["bytes_copied"] > real["bytes_copied"] > 0
    assert guest_view(top) == view


def test_same_file_other_name_changes_only_the_header(tmp_path):
    base, top = _overlay(tmp_path)
    check1, real1, _c2, _r2 = converge(qcow2_rebase, {"path": top, "backing_file": base}, tmp_path)
    assert check1["header_only"] and real1["header_only"] and real1["bytes_copied"] == check1["bytes_copied"] == 0
    assert check1["bytes_estimated"] is False
    assert info(top)["backing-filename"] == base


def test_unsafe_records_a_file_that_does_not_exist_yet(tmp_path):
    _base, top = _overlay(tmp_path)
    converge(qcow2_rebase, {"path": top, "backing_file": "later.qcow2", "mode": "unsafe"}, tmp_path)
    assert info(top)["backing-filename"] == "later.qcow2"
    result = run_failed(qcow2_rebase, {"path": top, "backing_file": "base.qcow2"})
    assert "mode=unsafe" in result["msg"]


def test_unsafe_records_the_backing_format(tmp_path):
    raw = tmp_path / "base.raw"
    raw.write_bytes(bytes(MIB))
    top = make_image(tmp_path / "top.qcow2", backing="base.raw", backing_format="raw")
    with api.open_chain(top, fmt="qcow2", writable=True, backing=False) as chain:
        set_backing(chain.top, "base.raw", None)  # an old image that never recorded the format
    assert "backing-filename-format" not in info(top)
    converge(qcow2_rebase, {"path": top, "backing_file": "base.raw", "backing_format": "raw"}, tmp_path)
    assert info(top)["backing-filename-format"] == "raw"


def test_diff_predicts_the_chain(tmp_path):
    base, top = _overlay(tmp_path)
    check = run_ok(qcow2_rebase, {"path": top, "backing_file": ""}, check_mode=True, diff=True)
    real = run_ok(qcow2_rebase, {"path": top, "backing_file": ""}, diff=True)
    assert check["diff"] == real["diff"]
    assert [entry["filename"] for entry in check["diff"]["before"]["chain"]] == [top, base]
    assert check["diff"]["after"]["chain"] == [dict(check["diff"]["before"]["chain"][0], backing_filename=None,
                                                    backing_format=None)]


def test_errors(tmp_path):
    base, top = _overlay(tmp_path)
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(MIB))
    cases = [
        ({"path": top, "backing_file": "missing.qcow2"}, "No such file"),
        ({"path": top, "backing_file": "disk.raw"}, "not a qcow2 image"),
        ({"path": top, "backing_file": "base.qcow2", "backing_format": "raw"}, "is a qcow2 image"),
        ({"path": base, "backing_file": "top.qcow2"}, "infinite loop"),
        ({"path": base, "backing_file": "top.qcow2", "mode": "unsafe"}, "infinite loop"),
        ({"path": str(raw), "backing_file": ""}, "not a qcow2 image"),
        ({"path": top, "backing_file": str(raw), "backing_format": "raw", "allowed_backing_dirs": ["/nonexistent"]},
         "outside the allowed directories"),
    ]
    for args, message in cases:
        for check_mode in (True, False):
            result = run_failed(qcow2_rebase, args, check_mode=check_mode)
            assert message in result["msg"], (args, result["msg"])
    assert info(top)["backing-filename"] == "base.qcow2"
    assert "backing-filename" not in info(base)


def test_locked(tmp_path):
    _base, top = _overlay(tmp_path)
    with api.open_chain(top, fmt="qcow2", writable=True):
        for check_mode in (True, False):
            result = run_failed(qcow2_rebase, {"path": top, "backing_file": ""}, check_mode=check_mode)
            assert 'Failed to get "write" lock' in result["msg"]
    assert os.path.exists(top) and info(top)["backing-filename"] == "base.qcow2"

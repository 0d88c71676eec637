# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.info import allocated_bytes
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_commit
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, guest_view, info, three_layer_chain
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import converge, run_failed, run_ok


def _chain(tmp_path):
    """base <- mid <- top, each layer with its own data."""
    return three_layer_chain(tmp_path)


def test_commit_a_middle_layer(tmp_path):
    base, mid, top = _chain(tmp_path)
    view = guest_view(top)
    args = {"path": top, "top": mid, "remove_committed": True}
    check1, real1, _c2, real2 = converge(qcow2_commit, args, tmp_path)
    assert check1["committed"] == real1["committed"] == [mid]
    assert check1["removed"] == real1["removed"] == [mid]
    assert real1["base"] == base
    assert not os.path.exists(mid)
    assert guest_view(top) == view
    assert info(top)["backing-filename"] == "base.qcow2"
    assert [image["filename"] for image in real2["chain"]] == [top, base]
    assert "not in the chain" in real2["msg"]
    assert api.check(base)["exit_code"] == 0


def test_commit_the_active_layer_keeps_it_as_an_empty_top(tmp_path):
    base, mid, top = _chain(tmp_path)
    view = guest_view(top)
    _c, real1, _c2, _r2 = converge(qcow2_commit, {"path": top}, tmp_path)
    assert real1["base"] == mid and real1["committed"] == [] and real1["bytes_copied"] > 0
    assert guest_view(top) == view
    with api.open_chain(top, backing=False, force_share=True) as chain:
        assert allocated_bytes(chain.top) == 0
    assert guest_view(mid) == view  # mid now holds what top held
    assert info(base)["virtual-size"] == 2 * MIB


def test_commit_into_a_lower_base_repoints_the_top(tmp_path):
    base, mid, top = _chain(tmp_path)
    view = guest_view(top)
    check1, _r, _c2, _r2 = converge(qcow2_commit, {"path": top, "base": base}, tmp_path)
    assert check1["committed"] == [mid]
    assert os.path.exists(mid)  # remove_committed is off
    assert guest_view(base) == view
    assert info(top)["backing-filename"] == "base.qcow2"


def test_diff_predicts_the_chain(tmp_path):
    base, mid, top = _chain(tmp_path)
    check = run_ok(qcow2_commit, {"path": top, "top": mid}, check_mode=True, diff=True)
    real = run_ok(qcow2_commit, {"path": top, "top": mid}, diff=True)
    assert check["diff"] == real["diff"]
    assert [entry["filename"] for entry in real["diff"]["before"]["chain"]] == [top, mid, base]
    assert [entry["filename"] for entry in real["diff"]["after"]["chain"]] == [top, base]


def test_errors(tmp_path):
    base, mid, top = _chain(tmp_path)
    assert "no backing file" in run_failed(qcow2_commit, {"path": base})["msg"]
    assert "Did not find" in run_failed(qcow2_commit, {"path": top, "base": str(tmp_path / "other.qcow2")})["msg"]
    assert "not below" in run_failed(qcow2_commit, {"path": top, "top": mid, "base": top})["msg"]
    assert "Is a directory" in run_failed(qcow2_commit, {"path": str(tmp_path)})["msg"]
    os.rename(base, base + ".moved")
    assert "No such file" in run_failed(qcow2_commit, {"path": top})["msg"]


def test_locked_base(tmp_path):
    base, mid, top = _chain(tmp_path)
    with api.open_chain(mid, fmt="qcow2", writable=True):
        for check_mode in (True, False):
            assert "lock" in run_failed(qcow2_commit, {"path": top}, check_mode=check_mode)["msg"]
    assert info(top)["backing-filename"] == "mid.qcow2"

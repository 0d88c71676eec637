# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""chain_flatten's planning: which chains are flattened, how, onto which base, and which layers may go."""

from __future__ import annotations

import os

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.filter.flatten_plan import FilterModule, flatten_plan
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_info
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, make_image
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_failed, run_ok

KEYS = ["filename", "format", "virtual_size", "actual_size", "backing_filename", "full_backing_filename",
        "backing_filename_format"]


def entry(path, below=None, fmt="qcow2", actual=65536):
    image = {"filename": path, "format": fmt, "virtual_size": 16 * MIB, "actual_size": actual, "dirty_flag": False}
    if below:
        same_dir = os.path.dirname(below) == os.path.dirname(path)
        image.update(backing_filename=os.path.basename(below) if same_dir else below, full_backing_filename=below,
                     backing_filename_format="qcow2")
    return image


def read(*paths, actual=65536):
    """A qcow2_info loop result for the chain of paths, top first."""
    chain = [entry(path, paths[i + 1] if i + 1 < len(paths) else None, actual=actual) for i, path in enumerate(paths)]
    return {"item": paths[0], "chain": chain, "chain_depth": len(chain), "image": chain[0], "failed": False}


def plan(results, tops=None, **options):
    options.setdefault("max_depth", 3)
    options.setdefault("target_depth", 2)
    tops = tops if tops is not None else [result["item"] for result in results if "chain" in result]
    return flatten_plan(results, tops, report_keys=KEYS, host="hv1", **options)


def row_of(rows, image):
    return next(row for row in rows if row["image"] == image)


DEEP = read("/srv/vm.qcow2", "/srv/s2.qcow2", "/srv/s1.qcow2", "/srv/base.qcow2")


def test_a_chain_within_the_maximum_is_unchanged():
    [row] = plan([read("/srv/vm.qcow2", "/srv/base.qcow2")])
    assert row["result"] == "unchanged" and row["method"] is None
    assert row["message"] == "depth 2 is within the maximum of 3"
    assert row["depth_before"] == row["depth_after"] == 2
    assert row["dropped"] == [] and row["pull_estimate"] == 0
    assert row["chain_before"] == row["chain_after"] == [dict((k, v) for k, v in e.items() if k in KEYS) for e in
                                                         read("/srv/vm.qcow2", "/srv/base.qcow2")["chain"]]


def test_an_exclusive_base_is_committed_into():
    [row] = plan([DEEP])
    assert row["result"] == "pending" and row["method"] == "commit"
    assert (row["top"], row["base"], row["base_format"]) == ("/srv/s2.qcow2", "/srv/base.qcow2", "qcow2")
    assert row["backing_name"] == "base.qcow2"  # the base lives in the image's directory: recorded relative
    assert row["dropped"] == row["removable"] == ["/srv/s2.qcow2", "/srv/s1.qcow2"]
    assert row["shared"] is False and row["message"] == ""
    predicted = row["predicted_after"]
    assert [image["filename"] for image in predicted] == ["/srv/vm.qcow2", "/srv/base.qcow2"]
    assert predicted[0]["backing_filename"] == "base.qcow2" and predicted[0]["full_backing_filename"] == "/srv/base.qcow2"
    assert all("actual_size" not in image for image in predicted)  # not known before the change
    assert row["pull_estimate"] == 2 * 65536


def test_a_base_in_another_directory_is_recorded_absolute():
    [row] = plan([read("/srv/vm.qcow2", "/srv/s2.qcow2", "/srv/s1.qcow2", "/gold/base.qcow2")])
    assert row["base"] == row["backing_name"] == "/gold/base.qcow2"


def test_a_base_other_chains_read_directly_is_pulled_onto():
    other = read("/srv/other.qcow2", "/srv/base.qcow2")
    row = row_of(plan([DEEP, other]), "/srv/vm.qcow2")
    assert row["method"] == "pull" and row["shared"] is True
    assert row["removable"] == ["/srv/s2.qcow2", "/srv/s1.qcow2"]


def test_a_base_other_chains_read_through_the_first_dropped_layer_is_not_shared():
    other = read("/srv/other.qcow2", "/srv/s2.qcow2", "/srv/s1.qcow2", "/srv/base.qcow2")
    row = row_of(plan([DEEP, other], max_depth=4), "/srv/vm.qcow2")
    assert row["result"] == "unchanged"
    row = row_of(plan([DEEP, other]), "/srv/vm.qcow2")
    assert row["method"] == "commit" and row["shared"] is False
    assert row["removable"] == []  # the other chain still uses s2


def test_strategy_commit_skips_what_it_could_only_pull():
    other = read("/srv/other.qcow2", "/srv/base.qcow2")
    row = row_of(plan([DEEP, other], strategy="commit"), "/srv/vm.qcow2")
    assert row["result"] == "skipped" and row["method"] is None
    assert row["message"] == ("strategy commit never writes into /srv/base.qcow2: other images read it without going "
                              "through /srv/s2.qcow2")


def test_strategy_pull_never_commits():
    [row] = plan([DEEP], strategy="pull")
    assert row["method"] == "pull" and row["shared"] is False


def test_target_depth_one_pulls_everything_into_the_image():
    [row] = plan([DEEP], target_depth=1)
    assert row["method"] == "pull" and row["base"] is None and row["backing_name"] == ""
    assert row["dropped"] == ["/srv/s2.qcow2", "/srv/s1.qcow2", "/srv/base.qcow2"]
    assert row["predicted_after"] == [{"filename": "/srv/vm.qcow2", "format": "qcow2", "virtual_size": 16 * MIB}]
    assert row["pull_estimate"] == 3 * 65536


def test_domain_disks_are_kept_and_named():
    disks = [{"domain": "old", "disk": "vdc", "file": "/srv/s2.qcow2", "running": False},
             {"domain": "web", "disk": "vda", "file": "/srv/vm.qcow2", "running": True}]
    [row] = plan([DEEP], domain_disks=disks)
    assert row["removable"] == ["/srv/s1.qcow2"]
    assert (row["domain"], row["disk"], row["live"]) == ("web", "vda", True)
    [row] = plan([DEEP], domain_disks=disks, remove_dropped=False)
    assert row["removable"] == []


def test_users_of_a_top_name_its_domain_and_its_users():
    users = [{"item": {"item": "/srv/vm.qcow2"}, "users": [
        {"domain": "web", "disk": "vda", "state": "running", "depth": 0, "file": "/srv/vm.qcow2"},
        {"domain": "clone", "disk": "vdb", "state": "shut off", "depth": 1, "file": "/srv/vm.qcow2"}]},
        {"item": {"item": "/srv/x.qcow2"}, "skipped": True}]
    [row] = plan([DEEP], users=users)
    assert (row["domain"], row["disk"], row["live"]) == ("web", "vda", True)
    assert row["top_users"] == ["web/vda", "clone/vdb"]
    # a domain disk found through users is looked up before the named domains' disks
    named = [{"domain": "other", "disk": "vdz", "file": "/srv/vm.qcow2", "running": False}]
    [row] = plan([DEEP], users=users, domain_disks=named)
    assert row["domain"] == "web"


def test_unreadable_images_come_first_raw_ones_skipped():
    raw = {"item": "/srv/db.raw", "failed": True, "msg": "/srv/db.raw is not a qcow2 image", "image_format": "raw"}
    broken = {"item": "/srv/broken.qcow2", "failed": True, "msg": "Could not open backing file"}
    mute = {"item": "/srv/mute.qcow2", "failed": True}
    disks = [{"domain": "db", "disk": "vdb", "file": "/srv/db.raw", "running": True}]
    rows = plan([DEEP, raw, broken, mute], domain_disks=disks)
    assert [row["image"] for row in rows] == ["/srv/db.raw", "/srv/broken.qcow2", "/srv/mute.qcow2", "/srv/vm.qcow2"]
    assert [row["result"] for row in rows[:3]] == ["skipped", "failed", "failed"]
    assert rows[0]["domain"] == "db" and rows[0]["live"] is True
    assert rows[2]["message"] == "could not be read"
    assert rows[1]["depth_before"] is None and rows[1]["chain_before"] == []


def test_a_raw_file_read_by_qcow2_info_is_skipped(tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(MIB))
    top = make_image(tmp_path / "vm.qcow2", size=MIB)
    results = [dict(run_failed(qcow2_info, {"path": str(raw)}), item=str(raw)),
               dict(run_ok(qcow2_info, {"path": top}), item=top)]
    rows = plan(results)
    assert [(row["image"], row["result"]) for row in rows] == [(str(raw), "skipped"), (top, "unchanged")]


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError, match="strategy must be one of"):
        plan([DEEP], strategy="fast")
    with pytest.raises(AnsibleFilterError, match="not among the readable results"):
        plan([DEEP], tops=["/srv/none.qcow2"])


def test_registered():
    assert FilterModule().filters()["flatten_plan"] is flatten_plan

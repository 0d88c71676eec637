# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/flatten.yml across three hosts over SSH, with one unreachable host and one broken image."""

from __future__ import annotations

import json
import os

from ansible_collections.backingchain.qcow2.tests.fleet.conftest import run_playbook
from ansible_collections.backingchain.qcow2.tests.fleet.sshd_fleet import HOSTS
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    qemu_compare,
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_io,
)

DEPTHS = {"host1": 4, "host2": 5, "host3": 2}


def _deep_chain(directory, name, depth):
    """name-0 <- name-1 <- ... <- name.qcow2, each layer writing its own pattern; returns (top, raw view)."""
    previous = None
    for level in range(depth):
        path = os.path.join(directory, "%s.qcow2" % name if level == depth - 1 else "%s-%d.qcow2" % (name, level))
        if previous is None:
            qemu_img_create(path, "16M")
        else:
            qemu_img_create(path, backing=os.path.basename(previous), backing_fmt="qcow2", cwd=directory)
        qemu_io(path, "write -P %d %dM 2M" % (0x10 + level, level * 2))
        previous = path
    view = os.path.join(directory, "..", "%s.view.raw" % name)
    qemu_img("convert", "-O", "raw", previous, view)
    return previous, view


def _inventory_with_unreachable(fleet):
    path = os.path.join(fleet.root, "inventory-unreachable.ini")
    with open(fleet.inventory) as src, open(path, "w") as dst:
        for line in src:
            dst.write(line)
            if line.startswith("[fleet]"):
                dst.write("host4 ansible_host=127.0.0.5 image_dir=%s/host4\n" % fleet.root)
    return path


def test_flatten_playbook_across_the_fleet(fleet):
    tops = {}
    for host, depth in DEPTHS.items():
        tops[host] = _deep_chain(fleet.image_dir(host), "vm-%s" % host, depth)
    # host3 also holds an image whose backing file is missing: it fails alone
    broken = qemu_img_create(os.path.join(fleet.image_dir("host3"), "broken.qcow2"), "16M")
    qemu_io(broken, "write -P 1 0 1M")
    qemu_img("rebase", "-u", "-b", "gone.qcow2", "-F", "qcow2", broken)
    inventory = _inventory_with_unreachable(fleet)
    report_dir = os.path.join(fleet.root, "report")
    extra = {"chain_flatten_dirs": ["{{ image_dir }}"], "chain_flatten_max_depth": 3,
             "chain_flatten_target_depth": 2, "chain_flatten_report_dir": report_dir}

    before = {h: os.stat(t).st_mtime_ns for h, (t, _v) in tops.items()}
    rc, out = run_playbook(fleet, "flatten.yml", extra, check=True, inventory=inventory)
    plan = json.load(open(os.path.join(report_dir, "chain-flatten-plan.json")))
    assert {h: os.stat(t).st_mtime_ns for h, (t, _v) in tops.items()} == before, out
    planned = {r["host"]: r for r in plan["images"] if r["image"].endswith("vm-%s.qcow2" % r["host"])}
    assert planned["host1"]["result"] == "planned" and planned["host2"]["result"] == "planned", out
    assert planned["host3"]["result"] == "unchanged"
    assert all(planned[h]["bytes_moved"] > 0 for h in ("host1", "host2"))

    rc, out = run_playbook(fleet, "flatten.yml", extra, inventory=inventory)
    assert rc != 0, out  # the broken image and the unreachable host fail the play, after the report
    report = json.load(open(os.path.join(report_dir, "chain-flatten.json")))
    rows = {(r["host"], os.path.basename(r["image"])): r for r in report["images"]}
    hosts = {h["host"]: h for h in report["hosts"]}
    assert hosts["host4"]["status"] == "unreachable"
    assert rows[("host3", "broken.qcow2")]["result"] == "failed"
    assert "gone.qcow2" in rows[("host3", "broken.qcow2")]["message"]
    for host, (top, view) in tops.items():
        row = rows[(host, os.path.basename(top))]
        expected = "flattened" if DEPTHS[host] > 3 else "unchanged"
        assert row["result"] == expected, row
        assert row["depth_before"] == DEPTHS[host]
        assert row["depth_after"] == min(DEPTHS[host], 2 if DEPTHS[host] > 3 else DEPTHS[host])
        assert len(backing_chain(top)) == row["depth_after"]
        assert qemu_compare(top, view, fmt_b="raw")
        for path, _fmt in backing_chain(top):
            assert qemu_img_check(path).returncode == 0
    markdown = open(os.path.join(report_dir, "chain-flatten.md")).read()
    assert "```mermaid" in markdown and all(h in markdown for h in HOSTS)

    rc, out = run_playbook(fleet, "flatten.yml", extra, limit="host1,host2,host3")
    report = json.load(open(os.path.join(report_dir, "chain-flatten.json")))
    assert all(r["result"] in ("unchanged", "failed") for r in report["images"]), out
    assert report["totals"]["flattened"] == 0
    assert report["totals"]["hosts"] == 3

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qcow2_info domain and users against a real libvirtd: running qemu domains (locked images, the chain from the
live XML) and shut-off ones (the chain from the definition and the headers)."""

from __future__ import annotations

from chain_setup import three_deep_chain
from live_helpers import create_image, lock_bytes
from module_runner import run_failed, run_ok

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import fingerprint


def entries(*paths):
    return [{"file": path, "format": "qcow2"} for path in paths]


def test_a_running_domains_disk_and_the_domains_using_its_images(make_domain, image_dir):
    chain = three_deep_chain(image_dir)  # relative links in the headers
    running = make_domain(chain.top)
    other = make_domain(create_image(str(image_dir / "other.qcow2"), backing=chain.mid), start=False)
    assert lock_bytes(chain.top), "qemu holds the running chain"
    before = fingerprint(image_dir)

    # Through ansible (the module_utils AnsiballZ ships), and in check mode in-process.
    described = run_ok("qcow2_info", {"path": chain.top, "domain": running.name(), "users": True})
    checked = run_ok("qcow2_info", {"path": chain.top, "domain": running.name(), "users": True}, check=True,
                     in_process=True)

    domain = described["domain"]
    assert (domain["name"], domain["state"], domain["disk"], domain["depth"]) == (running.name(), "running", "vda", 0)
    assert domain["chain"] == entries(chain.top, chain.mid, chain.base)  # libvirt's absolute paths
    assert domain["disks"] == [{"disk": "vda", "device": "disk", "type": "file", "file": chain.top, "format": "qcow2"}]
    assert [image["filename"] for image in described["chain"]] == [chain.top, chain.mid, chain.base]
    assert described["users"] == [{"domain": running.name(), "state": "running", "disk": "vda", "depth": 0,
                                   "file": chain.top}]
    assert checked["domain"] == domain and checked["users"] == described["users"] and checked["changed"] is False

    mid_users = run_ok("qcow2_info", {"path": chain.mid, "users": True, "backing_chain": False}, in_process=True)["users"]
    assert sorted((use["domain"], use["state"], use["depth"]) for use in mid_users) == sorted(
        [(running.name(), "running", 1), (other.name(), "shut off", 1)])
    base_users = run_ok("qcow2_info", {"path": chain.base, "users": True}, in_process=True)["users"]
    assert sorted((use["domain"], use["depth"]) for use in base_users) == sorted([(running.name(), 2), (other.name(), 2)])

    deeper = run_failed("qcow2_info", {"path": chain.mid, "domain": running.name()}, in_process=True)
    assert "is a backing image (depth 1) of disk vda" in deeper["msg"]
    assert fingerprint(image_dir) == before and running.isActive()


def test_a_shut_off_domain_after_a_live_snapshot_is_described_from_its_definition(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    overlay = create_disk_only_snapshot(dom, {"vda": str(image_dir / "overlay.qcow2")})["overlays"]["vda"]
    dom.destroy()
    # libvirt wrote the chain it ran into the definition, without an end: the headers go on below it
    inactive = select_disk(domain_disks(dom, inactive=True), target="vda")
    assert inactive.source == overlay and inactive.has_backing_store and not inactive.chain_terminated

    result = run_ok("qcow2_info", {"domain": dom.name(), "disk": "vda"}, in_process=True)

    assert result["domain"]["state"] == "shut off"
    assert result["domain"]["chain"] == entries(overlay, chain.top, chain.mid, chain.base)
    assert "image" not in result and "depth" not in result["domain"]
    users = run_ok("qcow2_info", {"path": chain.base, "users": True}, in_process=True)["users"]
    assert [(use["domain"], use["state"], use["depth"]) for use in users] == [(dom.name(), "shut off", 3)]

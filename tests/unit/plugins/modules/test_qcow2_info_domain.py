# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qcow2_info domain and users against libvirt's test driver (a real libvirt, no daemon); tests/live has the same
against a real libvirtd with running qemu domains."""

from __future__ import annotations

import os
from unittest import mock

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._live import libvirt_dep
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_info
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import fingerprint, make_image
from ansible_collections.backingchain.qcow2.tests.unit.plugins.libvirt_test_driver import (
    DiskSpec,
    DomainSpec,
    backing_store,
    node_uri,
)
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_failed, run_ok


@pytest.fixture
def images(tmp_path):
    """golden <- web (web1's disk, running) and golden <- app (db's disk, shut off); db also has a raw disk."""
    d = tmp_path / "images"
    d.mkdir()
    golden = make_image(d / "golden.qcow2")
    web = make_image(d / "web.qcow2", backing="golden.qcow2")
    app = make_image(d / "app.qcow2", backing=golden)
    raw = str(d / "data.raw")
    with open(raw, "wb") as f:
        f.truncate(1 << 20)
    return {"dir": d, "golden": golden, "web": web, "app": app, "raw": raw}


@pytest.fixture
def uri(tmp_path, images):
    return node_uri(tmp_path, [
        DomainSpec("web1", [DiskSpec("vda", images["web"]),
                            DiskSpec("sda", str(images["dir"] / "install.iso"), format=None, device="cdrom")]),
        DomainSpec("db", [DiskSpec("vda", images["app"]), DiskSpec("vdb", images["raw"], format="raw")], running=False),
    ])


def test_domain_alone_lists_state_and_disks_and_reads_no_image(uri, images):
    result = run_ok(qcow2_info, {"domain": "web1", "uri": uri})

    assert result["domain"] == {"name": "web1", "state": "running", "disks": [
        {"disk": "vda", "device": "disk", "type": "file", "file": images["web"], "format": "qcow2"},
        {"disk": "sda", "device": "cdrom", "type": "file", "file": str(images["dir"] / "install.iso"), "format": None},
    ]}
    assert "image" not in result and "chain" not in result and "users" not in result and result["changed"] is False


def test_the_disk_whose_active_image_is_path_with_its_chain(uri, images):
    link = str(images["dir"] / "link-to-web.qcow2")
    os.symlink(images["web"], link)
    before = fingerprint(images["dir"])

    result = run_ok(qcow2_info, {"path": link, "domain": "web1", "uri": uri})
    checked = run_ok(qcow2_info, {"path": link, "domain": "web1", "uri": uri}, check_mode=True)

    # The test driver lists no chain for a running domain: the headers complete it, as for a definition.
    domain = result["domain"]
    assert (domain["disk"], domain["depth"]) == ("vda", 0)
    assert domain["chain"] == [{"file": images["web"], "format": "qcow2"}, {"file": images["golden"], "format": "qcow2"}]
    assert [image["filename"] for image in result["chain"]] == [link, images["golden"]]
    assert checked == result and fingerprint(images["dir"]) == before


def test_a_shut_off_domain_is_described_from_its_definition(uri, images):
    result = run_ok(qcow2_info, {"domain": "db", "disk": "vda", "uri": uri})

    assert result["domain"]["state"] == "shut off" and result["domain"]["disk"] == "vda"
    assert result["domain"]["chain"] == [{"file": images["app"], "format": "qcow2"},
                                         {"file": images["golden"], "format": "qcow2"}]
    assert "depth" not in result["domain"] and "image" not in result
    raw = run_ok(qcow2_info, {"domain": "db", "disk": "vdb", "uri": uri})["domain"]
    assert raw["chain"] == [{"file": images["raw"], "format": "raw"}]


def test_a_backing_store_in_the_definition_wins_over_the_headers_and_the_headers_go_on_below_it(tmp_path, images):
    other_base = make_image(images["dir"] / "other-base.qcow2")
    other = make_image(images["dir"] / "other.qcow2", backing="other-base.qcow2")
    listed = backing_store((other, "qcow2"), terminated=False)  # app's header says golden; libvirt would use other
    ended = backing_store((other, "qcow2"))
    uri = node_uri(tmp_path, [DomainSpec("a", [DiskSpec("vda", images["app"], backing_xml=listed)], running=False),
                              DomainSpec("b", [DiskSpec("vda", images["app"], backing_xml=ended)], running=False)])

    unterminated = run_ok(qcow2_info, {"path": images["app"], "domain": "a", "uri": uri})["domain"]["chain"]
    terminated = run_ok(qcow2_info, {"path": images["app"], "domain": "b", "uri": uri})["domain"]["chain"]

    assert [image["file"] for image in unterminated] == [images["app"], other, other_base]
    assert [image["file"] for image in terminated] == [images["app"], other]
    users = run_ok(qcow2_info, {"path": other_base, "users": True, "uri": uri, "backing_chain": False})["users"]
    assert [(use["domain"], use["depth"]) for use in users] == [("a", 2)]
    assert run_ok(qcow2_info, {"path": images["golden"], "users": True, "uri": uri})["users"] == []


def test_path_deeper_in_a_chain_needs_disk(uri, images):
    failed = run_failed(qcow2_info, {"path": images["golden"], "domain": "web1", "uri": uri})
    assert "is a backing image (depth 1) of disk vda of domain 'web1'" in failed["msg"] and "disk: vda" in failed["msg"]

    assert run_ok(qcow2_info, {"path": images["golden"], "domain": "web1", "disk": "vda", "uri": uri})["domain"]["depth"] == 1
    elsewhere = run_ok(qcow2_info, {"path": images["app"], "domain": "web1", "disk": "vda", "uri": uri})["domain"]
    assert elsewhere["depth"] is None and elsewhere["disk"] == "vda"

    unrelated = make_image(images["dir"] / "unrelated.qcow2")
    failed = run_failed(qcow2_info, {"path": unrelated, "domain": "web1", "uri": uri})
    assert "in the chain of no disk of domain 'web1'" in failed["msg"] and "users: true" in failed["msg"]
    assert "has no disk vdz" in run_failed(qcow2_info, {"domain": "web1", "disk": "vdz", "uri": uri})["msg"]
    assert "domain 'nope' does not exist" in run_failed(qcow2_info, {"domain": "nope", "uri": uri})["msg"]


def test_users_lists_running_and_shut_off_domains_at_every_depth(uri, images):
    alias = str(images["dir"] / "alias-of-golden.qcow2")
    os.symlink(images["golden"], alias)

    golden = run_ok(qcow2_info, {"path": alias, "users": True, "uri": uri, "backing_chain": False})["users"]
    web = run_ok(qcow2_info, {"path": images["web"], "users": True, "uri": uri})["users"]
    checked = run_ok(qcow2_info, {"path": images["web"], "users": True, "uri": uri}, check_mode=True)

    assert golden == [
        {"domain": "db", "state": "shut off", "disk": "vda", "depth": 1, "file": images["golden"]},
        {"domain": "web1", "state": "running", "disk": "vda", "depth": 1, "file": images["golden"]},
    ]
    assert web == [{"domain": "web1", "state": "running", "disk": "vda", "depth": 0, "file": images["web"]}]
    assert checked["users"] == web
    # path is what the module reads: a raw file is refused, as without users
    raw = run_failed(qcow2_info, {"path": images["raw"], "users": True, "uri": uri})
    assert "not a qcow2 image" in raw["msg"]


def test_users_follow_other_chains_as_far_as_they_go(tmp_path, images):
    gone = make_image(images["dir"] / "gone.qcow2")
    broken = make_image(images["dir"] / "broken.qcow2", backing="gone.qcow2")
    os.unlink(gone)
    outside = tmp_path / "outside"
    outside.mkdir()
    foreign_base = make_image(outside / "foreign-base.qcow2")
    foreign = make_image(images["dir"] / "foreign.qcow2", backing=foreign_base)
    uri = node_uri(tmp_path, [
        DomainSpec("broken", [DiskSpec("vda", broken)]),
        DomainSpec("foreign", [DiskSpec("vda", foreign)], running=False),
        DomainSpec("web1", [DiskSpec("vda", images["web"]), DiskSpec("vdb", None, kind="network", format="raw")]),
    ])
    policy = {"allowed_backing_dirs": [str(images["dir"])]}

    golden = run_ok(qcow2_info, dict(policy, path=images["golden"], users=True, uri=uri))["users"]
    missing = run_ok(qcow2_info, {"path": images["app"], "users": True, "uri": uri})["users"]
    outside_users = run_ok(qcow2_info, {"path": foreign_base, "users": True, "uri": uri})["users"]
    allowed_users = run_ok(qcow2_info, dict(policy, path=foreign_base, users=True, uri=uri))["users"]

    # broken's chain ends at its missing backing file; web1's network disk has no file to compare
    assert [(use["domain"], use["depth"]) for use in golden] == [("web1", 1)]
    assert missing == []
    # foreign-base.qcow2 is outside the allowed directories: with them, foreign's chain is not followed to it
    assert [(use["domain"], use["depth"]) for use in outside_users] == [("foreign", 1)]
    assert allowed_users == []
    failed = run_failed(qcow2_info, dict(policy, domain="foreign", disk="vda", uri=uri))
    assert "outside the allowed directories" in failed["msg"]
    failed = run_failed(qcow2_info, {"domain": "broken", "disk": "vda", "uri": uri})
    assert "gone.qcow2" in failed["msg"] and "No such file" in failed["msg"]


def test_the_default_test_driver_works_too():
    result = run_ok(qcow2_info, {"domain": "test", "uri": "test:///default"})
    assert result["domain"]["state"] == "running" and result["domain"]["disks"][0]["disk"] == "vda"


def test_users_on_the_default_test_driver_skip_its_missing_disk(images):
    result = run_ok(qcow2_info, {"path": images["golden"], "users": True, "uri": "test:///default"})
    assert result["users"] == []


def test_options_that_need_path_or_domain(uri, images):
    assert "one of the following is required: path, domain" in run_failed(qcow2_info, {})["msg"]
    assert "path" in run_failed(qcow2_info, {"domain": "web1", "uri": uri, "users": True})["msg"]
    assert "path" in run_failed(qcow2_info, {"domain": "web1", "uri": uri, "check": True})["msg"]
    assert "domain" in run_failed(qcow2_info, {"path": images["web"], "disk": "vda"})["msg"]


def test_without_libvirt_python_domain_and_users_fail_naming_the_library(uri, images):
    with mock.patch.object(libvirt_dep, "libvirt", None):
        for args in ({"domain": "web1"}, {"path": images["web"], "users": True}):
            assert "libvirt-python" in run_failed(qcow2_info, dict(args, uri=uri))["msg"]
        assert run_ok(qcow2_info, {"path": images["web"]})["chain_depth"] == 2

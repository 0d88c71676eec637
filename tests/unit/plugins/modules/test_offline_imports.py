# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A module run without ``domain`` imports nothing of libvirt or the live layer: every run pays its imports in
start-up time. Each module runs as its own process, as Ansible runs it, and reports what it imported."""

from __future__ import annotations

import json
import subprocess
import sys

from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import make_image, three_layer_chain, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.libvirt_test_driver import DiskSpec, DomainSpec, node_uri

MODULES = "ansible_collections.backingchain.qcow2.plugins.modules."
LIVE = "ansible_collections.backingchain.qcow2.plugins.module_utils._live"

# Runs the module as __main__ with its arguments file, then writes the result and the live modules it imported.
RUNNER = """
import json, runpy, sys
module, args_file, report = sys.argv[1:4]
sys.argv = [module, args_file]
try:
    runpy.run_module(module, run_name="__main__")
except SystemExit:
    pass
live = sorted(name for name in sys.modules if name.split(".")[0] in ("libvirt", "libvirtmod") or name.startswith(%r))
with open(report, "w") as f:
    json.dump({"live": live, "construct": "construct" in sys.modules}, f)
""" % LIVE


def run_module(module, args, tmp_path, what="live"):
    """(the module's result, what the run imported: the libvirt and live-layer modules, or with what="construct"
    whether it imported construct)."""
    args_file, report = tmp_path / "args.json", tmp_path / "imported.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, "-c", RUNNER, MODULES + module, str(args_file), str(report)],
                          capture_output=True, text=True, check=False, env={"PYTHONPATH": ":".join(p for p in sys.path if p)})
    assert report.exists(), proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, json.loads(report.read_text())[what]


def _tasks(tmp_path):
    base, mid, top = three_layer_chain(tmp_path)
    single = make_image(tmp_path / "single.qcow2")
    write(single, 0, b"\x5a" * 65536)
    other = make_image(tmp_path / "other.qcow2", size=8 << 20)
    return [
        ("qcow2_info", {"path": top, "check": True}),
        ("qcow2_image", {"path": single, "size": "4M"}),
        ("qcow2_image", {"path": str(tmp_path / "new.qcow2"), "size": "1M"}),
        ("qcow2_snapshot", {"path": single, "name": "s1"}),
        ("qcow2_snapshot", {"path": single, "name": "ext", "type": "external", "overlay": str(tmp_path / "ov.qcow2")}),
        ("qcow2_commit", {"path": top, "top": mid}),
        ("qcow2_rebase", {"path": top, "backing_file": other}),
        ("qcow2_rebase", {"path": top, "backing_file": ""}),
        ("qcow2_info", {"path": base}),
        ("qcow2_bitmap", {"path": single, "name": "full"}),
        ("qcow2_bitmap", {"path": single, "name": "inc", "merge_from": [{"name": "full"}]}),
        ("qcow2_info", {"path": single}),  # lists the bitmaps
        ("qcow2_backup", {"path": base, "store": str(tmp_path / "store")}),  # a full
        ("qcow2_backup", {"path": base, "store": str(tmp_path / "store")}),  # an increment
        ("qcow2_backup_verify", {"store": str(tmp_path / "store")}),
        ("qcow2_backup_restore", {"store": str(tmp_path / "store"), "dest": str(tmp_path / "restored.qcow2")}),
    ]


def test_offline_runs_import_neither_libvirt_nor_the_live_layer(tmp_path):
    for module, args in _tasks(tmp_path):
        result, live = run_module(module, args, tmp_path)
        assert not result.get("failed"), (module, args, result)
        assert live == [], (module, args, live)


def test_a_domain_run_imports_the_live_layer(tmp_path):
    """The check above can fail: the same report for a run with ``domain`` names libvirt and the live layer."""
    image = make_image(tmp_path / "web.qcow2")
    uri = node_uri(tmp_path, [DomainSpec("web1", [DiskSpec("vda", image)])])
    result, live = run_module("qcow2_info", {"path": image, "domain": "web1", "uri": uri}, tmp_path)
    assert not result.get("failed"), result
    assert "libvirt" in live and LIVE + ".connection" in live


def test_users_imports_the_live_layer_when_asked(tmp_path):
    image = make_image(tmp_path / "one.qcow2")
    _result, live = run_module("qcow2_info", {"path": image, "users": True, "uri": "test:///default"}, tmp_path)
    assert LIVE + ".image_users" in live


def test_reading_plain_images_imports_no_construct(tmp_path):
    """construct (with its debugger support) costs a run about as much start-up time as the engine: a run that only
    reads images without snapshots or bitmaps unpacks their headers without it."""
    base, _mid, top = three_layer_chain(tmp_path)
    for module, args in (("qcow2_info", {"path": top}), ("qcow2_image", {"path": base})):
        result, construct = run_module(module, args, tmp_path, what="construct")
        assert not result.get("failed") and not result["changed"], (module, result)
        assert construct is False, module


def test_building_a_header_imports_construct(tmp_path):
    """The check above can fail: a run that writes a header builds it with the construct declarations."""
    result, construct = run_module("qcow2_image", {"path": str(tmp_path / "new.qcow2"), "size": "1M"}, tmp_path,
                                   what="construct")
    assert result["changed"] and construct is True

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules without domain on an image a running qemu holds: qemu's lock message, and the domain
using the image when libvirt answers."""

from __future__ import annotations

import subprocess
import time

from live_helpers import MiB, create_image, lock_bytes, write_offline
from module_runner import run_failed

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import fingerprint

LOCK_MESSAGE = 'Failed to get "write" lock'
UNREACHABLE_URI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def test_offline_tasks_on_a_running_domains_image_fail_naming_the_domain(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    top = create_image(str(image_dir / "top.qcow2"), backing=base)
    write_offline(top, 0x33, 0, MiB)  # something to commit
    dom = make_domain(top)
    name = dom.name()
    before = fingerprint(image_dir)
    in_use = "image %s is in use by running domain '%s' (disk vda); pass domain: %s" % (top, name, name)

    snapshot = run_failed("qcow2_snapshot", {"path": top, "type": "external", "overlay": str(image_dir / "o.qcow2")})
    commit = run_failed("qcow2_commit", {"path": top}, check=True, in_process=True)
    rebase = run_failed("qcow2_rebase", {"path": top, "backing_file": ""}, in_process=True)

    for result in (snapshot, commit, rebase):
        assert LOCK_MESSAGE in result["msg"] and in_use in result["msg"], result["msg"]
    assert fingerprint(image_dir) == before and live_chain(dom, "vda") == [top, base]

    unreachable = run_failed("qcow2_commit", {"path": top, "uri": UNREACHABLE_URI}, in_process=True)
    assert LOCK_MESSAGE in unreachable["msg"] and "in use by" not in unreachable["msg"]


def test_a_lock_held_by_something_else_is_said_to_be_no_domain(libvirt_up, image_dir):
    image = create_image(str(image_dir / "held.qcow2"))
    holder = subprocess.Popen(["qemu-io", image], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not lock_bytes(image):  # qemu-io takes qemu's locks once it opened the image
            assert time.monotonic() < deadline and holder.poll() is None, "qemu-io did not open %s" % image
            time.sleep(0.05)
        result = run_failed("qcow2_snapshot", {"path": image, "type": "external", "overlay": str(image_dir / "o.qcow2")},
                            in_process=True)
    finally:
        holder.communicate(b"quit\n", timeout=30)
    assert LOCK_MESSAGE in result["msg"] and "locked by a process that is not a libvirt domain on this host" in result["msg"]

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding the running domain that holds an image, and the qemu locks that make it necessary."""

from __future__ import annotations

import os
import subprocess

from live_helpers import create_image, lock_bytes

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.image_users import find_image_users, in_use_message

ACTIVE_IMAGE_LOCKS = {100, 101, 103, 201, 203}  # read, write, resize held; write, resize not shared
BACKING_IMAGE_LOCKS = {100, 201, 203}  # read held; write, resize not shared


def test_running_domain_is_found_for_every_image_of_its_chain(conn, make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    top = create_image(str(image_dir / "top.qcow2"), backing=base)
    dom = make_domain(top)
    alias = str(image_dir / "alias-of-base.qcow2")
    os.symlink(base, alias)

    (top_use,) = find_image_users(conn, top)
    assert (top_use.domain, top_use.target, top_use.depth, top_use.path, top_use.state) == (dom.name(), "vda", 0, top, "running")
    (base_use,) = find_image_users(conn, alias)  # another spelling of the same file
    assert (base_use.domain, base_use.depth, base_use.path, base_use.role) == (dom.name(), 1, base, "backing image")
    assert find_image_users(conn, create_image(str(image_dir / "unrelated.qcow2"))) == []

    assert in_use_message(top, [top_use]) == (
        "image %s is in use by running domain '%s' (disk vda); pass domain: %s" % (top, dom.name(), dom.name()))
    assert "backing image at depth 1" in in_use_message(base, [base_use])


def test_a_base_shared_by_two_running_domains_names_both(conn, make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    first = make_domain(create_image(str(image_dir / "a.qcow2"), backing=base))
    second = make_domain(create_image(str(image_dir / "b.qcow2"), backing=base))

    uses = find_image_users(conn, base)

    assert sorted((use.domain, use.depth) for use in uses) == sorted([(first.name(), 1), (second.name(), 1)])
    message = in_use_message(base, uses)
    assert "shared by domains %s" % ", ".join(sorted([first.name(), second.name()])) in message
    assert "pass domain" not in message


def test_stopped_domain_holds_nothing(conn, make_domain, image_dir):
    image = create_image(str(image_dir / "disk.qcow2"))
    make_domain(image, start=False)
    assert find_image_users(conn, image) == []
    assert lock_bytes(image) == set()


def test_qemu_holds_ofd_locks_on_the_running_chain(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    top = create_image(str(image_dir / "top.qcow2"), backing=base)
    make_domain(top)

    assert ACTIVE_IMAGE_LOCKS <= lock_bytes(top)
    assert BACKING_IMAGE_LOCKS <= lock_bytes(base) and 101 not in lock_bytes(base)
    refused = subprocess.run(["qemu-img", "snapshot", "-c", "x", top], capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and 'Failed to get "write" lock' in refused.stderr

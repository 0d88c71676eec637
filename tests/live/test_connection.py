# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Connecting, looking domains up and classifying their state."""

from __future__ import annotations

import pytest
from live_helpers import create_image, start_domain

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import (
    STATE_OTHER,
    STATE_RUNNING,
    STATE_SHUT_OFF,
    connect,
    domain_state,
    domain_state_name,
    lookup_domain,
    require_active,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError


def test_unreachable_libvirt_gives_live_error(libvirt_up):
    with pytest.raises(LiveError, match="cannot connect to libvirt at qemu\\+unix:///system\\?socket=/nonexistent"):
        connect("qemu+unix:///system?socket=/nonexistent/libvirt-sock")


def test_lookup_of_a_missing_domain_names_it(conn):
    with pytest.raises(LiveError, match="domain 'bcq-test-no-such-domain' does not exist"):
        lookup_domain(conn, "bcq-test-no-such-domain")


def test_state_follows_the_domain_lifecycle(conn, make_domain, image_dir):
    dom = make_domain(create_image(str(image_dir / "disk.qcow2")), start=False)
    found = lookup_domain(conn, dom.name())
    assert found.UUIDString() == dom.UUIDString()
    assert domain_state(found) == STATE_SHUT_OFF
    with pytest.raises(LiveError, match="is shut off"):
        require_active(found, "commit")

    start_domain(found)
    assert domain_state(found) == STATE_RUNNING
    found.suspend()
    assert (domain_state(found), domain_state_name(found)) == (STATE_OTHER, "paused")
    require_active(found, "commit")  # a paused qemu still runs block jobs
    found.resume()
    assert domain_state(found) == STATE_RUNNING

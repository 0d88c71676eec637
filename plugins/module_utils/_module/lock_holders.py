# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Naming the libvirt domain behind qemu's lock message, for tasks that could have passed ``domain``."""

from __future__ import annotations

import contextlib

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import connect
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.image_users import find_image_users, in_use_message
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import HAS_LIBVIRT, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import ImageLockedError


def lock_holders(path, uri):
    """in_use_message for path when libvirt at uri answers, else None (qemu's message has to do)."""
    if not HAS_LIBVIRT or not path:
        return None
    libvirt = require_libvirt()
    try:
        conn = connect(uri)
    except LiveError:
        return None
    try:
        return in_use_message(path, find_image_users(conn, path))
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def could_pass_domain(params):
    """The task accepts ``domain`` to change a domain's chain and did not set it. Internal snapshots cannot go
    through a domain; qcow2_info (the module with force_share) only reads, and its domain would not lift a lock."""
    return "domain" in params and not params["domain"] and params.get("type") != "internal" and "force_share" not in params


@contextlib.contextmanager
def naming_lock_holders(params):
    """Re-raise ImageLockedError with the domains using the image when the task could have passed
    ``domain``; qemu's own message stays first."""
    try:
        yield
    except ImageLockedError as err:
        if not could_pass_domain(params):
            raise
        holders = lock_holders(err.path, params.get("uri"))
        if not holders:
            raise
        raise ImageLockedError("%s\n%s" % (err, holders), err.path) from None

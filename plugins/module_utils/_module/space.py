# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Refusing before writing when the filesystem cannot hold the result."""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import NoSpaceError


def free_bytes(path):
    """Bytes an unprivileged writer may still use on the filesystem holding path's directory."""
    st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    return st.f_bavail * st.f_frsize


def require_free(path, needed, what):
    free = free_bytes(path)
    if needed > free:
        raise NoSpaceError("Not enough space for %s: it needs %d bytes, the filesystem of %s has %d free"
                           % (what, needed, os.path.dirname(os.path.abspath(path)), free), path)


def require_for_create(path, opts):
    """falloc and full preallocation reserve every guest byte; off and metadata need only small metadata."""
    if opts.preallocation in ("falloc", "full"):
        require_free(path, opts.size, "%s with preallocation=%s" % (path, opts.preallocation))

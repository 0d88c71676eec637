# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Refusing to start an operation the target filesystem cannot hold."""

from __future__ import annotations

import os

from .errors import NoSpaceError


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding path (or its directory)."""
    target = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)) or "."
    st = os.statvfs(target)
    return st.f_bavail * st.f_frsize


def require_space(path: str, needed: int, what: str) -> None:
    """Raise NoSpaceError naming the numbers when needed bytes will not fit."""
    free = free_bytes(path)
    if needed > free:
        raise NoSpaceError("Not enough space for %s: it needs up to %d bytes but the filesystem holding %s has %d bytes free"
                           % (what, needed, path, free), path)

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Deciding whether two path strings name the same image file."""

from __future__ import annotations

import os


def file_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``path`` after following symlinks, or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def same_file(first: str | None, second: str | None) -> bool:
    """True if both paths name the same file.

    Device+inode catches symlinks, bind mounts and hard links; libvirt reports absolute,
    resolved paths while users may pass another spelling. Paths that do not exist (yet)
    are compared by realpath.
    """
    if not first or not second:
        return False
    first_id = file_identity(first)
    second_id = file_identity(second)
    if first_id is not None and second_id is not None:
        return first_id == second_id
    return os.path.realpath(first) == os.path.realpath(second)

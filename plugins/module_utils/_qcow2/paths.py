# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Whether two path strings name the same file, where a file stands in a list of paths (a chain), and what
interrupted builds left beside a file.

same_file is the one definition every layer uses: the engine comparing the images of a chain, the modules
and the live layer comparing what a task names with what a header or libvirt records.
"""

from __future__ import annotations

import os
import typing

from .locking import holders_conflict


def file_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file ``path`` names, symlinks followed; None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def same_file(first: str | None, second: str | None) -> bool:
    """True if both paths name an existing file and it is the same one: device and inode decide, so any
    spelling, a symlink, a hard link or a bind mount of a file is that file. A path that cannot be stat'ed
    (missing, a dangling link) names no file: it is the same as nothing, not even itself."""
    if not first or not second:
        return False
    first_id = file_identity(first)
    return first_id is not None and first_id == file_identity(second)


def position_of(paths: typing.Iterable[str | None], path: str | None) -> int | None:
    """Index of the first of ``paths`` naming the same file as ``path`` (the depth in a chain listed top
    first), or None if none does."""
    return next((index for index, candidate in enumerate(paths) if same_file(candidate, path)), None)


def remove_stale_temporaries(path: str) -> None:
    """Delete what interrupted earlier builds of path left beside it, unless a live run still holds it locked:
    .NAME.*.tmp (a convert's, or a module's image built beside path) and ..NAME.*.tmp (a convert's into such
    a module's temporary image)."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not entry.endswith(".tmp") or not (entry.startswith("." + name + ".") or entry.startswith(".." + name + ".")):
            continue
        stale = os.path.join(directory, entry)
        try:
            if os.path.isfile(stale) and not os.path.islink(stale) and holders_conflict(stale, True) is None:
                os.unlink(stale)
        except OSError:
            continue

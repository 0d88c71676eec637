# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Writing one layer of a store: a full (the source's guest view, standalone) or an increment (the changed ranges
over the previous layer, named relatively, format qcow2).

The engine writes a new image under a temporary name and renames it when it is complete and flushed, checking
free space first; on ENOSPC or any error the temporary file goes and nothing appears under the layer's name.
"""

from __future__ import annotations

import hashlib
import os
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

HASH_CHUNK = 4 << 20


class Written(typing.NamedTuple):
    file: str  # name in the chain directory
    sha256: typing.List[str]  # part_digests() of the file
    bytes_copied: int
    file_bytes: int


def write_full(source: str, dest: str, part: int, policy: api.ChainPolicy | None = None) -> Written:
    cluster_size = api.image_info(source, backing_chain=False, policy=policy)[0].get("cluster-size")
    options = api.CreateOptions(cluster_size=cluster_size) if cluster_size else None
    result = api.convert(source, dest, options=options, policy=policy)
    return sealed(dest, result.bytes_written, part)


def write_increment(source: str, dest: str, previous: str, ranges: list[tuple[int, int]], part: int,
                    policy: api.ChainPolicy | None = None) -> Written:
    result = api.copy_ranges(source, dest, ranges, backing_file=os.path.basename(previous), backing_format="qcow2",
                             policy=policy)
    return sealed(dest, result.bytes_copied + result.bytes_zeroed, part)


def sealed(dest: str, bytes_copied: int, part: int) -> Written:
    return Written(os.path.basename(dest), part_digests(dest, part), bytes_copied, os.path.getsize(dest))


def part_digests(path: str, part: int, known: list[str] | None = None,
                 changed: typing.Sequence[tuple[int, int]] | None = None) -> list[str]:
    """The sha256 of each ``part`` bytes of the file (the last part shorter). With known (the digests before) and
    changed (the byte ranges written since), only the parts those ranges touch, and those past the end known,
    are read again: a merge into a full costs the size of what it wrote, not of the full."""
    size = os.path.getsize(path)
    count = max(1, -(-size // part))
    stale = set(range(count))
    if known is not None and changed is not None:
        stale = {index for index in range(count) if index >= len(known) - 1}  # the old last part may have grown
        for offset, length in changed:
            stale.update(range(offset // part, min(count, -(-(offset + length) // part))))
    digests = list(known[:count]) if known is not None and changed is not None else [""] * count
    digests += [""] * (count - len(digests))
    with open(path, "rb") as handle:
        for index in sorted(stale):
            digest = hashlib.sha256()
            handle.seek(index * part)
            left = min(part, size - index * part)
            while left > 0:
                block = handle.read(min(HASH_CHUNK, left))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
            digests[index] = digest.hexdigest()
    return digests

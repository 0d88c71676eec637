# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Writing one layer of a store: a full (the source's guest view, standalone) or an increment (the changed ranges
over the previous layer, named relatively, format qcow2), its data clusters compressed (zlib) when asked.

The engine writes a new image under a temporary name and renames it when it is complete and flushed, checking
free space first; on ENOSPC or any error the temporary file goes and nothing appears under the layer's name.
The digests the manifest seals are taken from the engine's write buffers as it writes the layer (digests.seal_new),
so the layer is not read back, except for the few blocks of metadata written in part.
"""

from __future__ import annotations

import os
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .digests import Hashing, seal_new


class Written(typing.NamedTuple):
    file: str  # name in the chain directory
    sha256: typing.List[str]  # digests.seal() of the file
    bytes_copied: int
    file_bytes: int


def write_full(source: str, dest: str, hashing: Hashing, policy: api.ChainPolicy | None = None,
               compress: bool = False) -> Written:
    cluster_size = api.image_info(source, backing_chain=False, policy=policy)[0].get("cluster-size")
    options = api.CreateOptions(cluster_size=cluster_size) if cluster_size else None
    with api.recording_new_image(dest, hashing.block) as written:
        result = api.convert(source, dest, compress=compress, options=options, policy=policy)
    return _sealed(dest, result.bytes_written, hashing, written)


def write_increment(source: str, dest: str, previous: str, ranges: list[tuple[int, int]], hashing: Hashing,
                    policy: api.ChainPolicy | None = None, compress: bool = False) -> Written:
    with api.recording_new_image(dest, hashing.block) as written:
        result = api.copy_ranges(source, dest, ranges, backing_file=os.path.basename(previous),
                                 backing_format="qcow2", policy=policy, compress=compress)
    return _sealed(dest, result.bytes_copied + result.bytes_zeroed, hashing, written)


def _sealed(dest: str, bytes_copied: int, hashing: Hashing, written: api.WriteRecord) -> Written:
    return Written(os.path.basename(dest), seal_new(dest, hashing, written), bytes_copied, os.path.getsize(dest))

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The sha256 digests the manifest seals for each layer file, per part of ``hash_part`` bytes of the file.

Format 2 stores (the manifest has ``hash_block``): the file is hashed in blocks of hash_block bytes (64 KiB), the
block digests are kept beside the layer in ``<layer>.sha256`` (32 bytes each, in file order: 1/2048 of the file),
and the manifest seals, for each part, the sha256 of that part's block digests. A new layer's digests are taken
from the engine's write buffers as it is written (a WriteRecord with block). A merge rewrites blocks all over the
full: the blocks its commit wrote whole are copies of the increment's blocks, so it takes their digests from the
increment's side file (vouched for by the increment's seal; a WriteRecord with from_copies), the others' from the
full's side file, and reads back only the blocks it changed in part (metadata) or could not match: it hashes
almost nothing and its cost follows the merged layer, not the full. Verify hashes every block of the file and,
when the side file still matches the seal, names the first block that differs.

Format 1 stores (no hash_block, written before): the manifest seals the sha256 of each part's bytes; they verify
as they did, and a merge rehashes every part it touched.
"""

from __future__ import annotations

import collections
import hashlib
import os
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

READ_CHUNK = 4 << 20
SIDE_SUFFIX = ".sha256"
DIGEST = 32


class Hashing(collections.namedtuple("Hashing", (
    "part",  # int; bytes of the file per sealed digest
    "block",  # Optional[int]; bytes per block digest in the side file (None: a format 1 store, no side files)
))):
    __slots__ = ()


def hashing_of(manifest: dict) -> Hashing:
    return Hashing(manifest["hash_part"], manifest.get("hash_block"))


def side_path(path: str) -> str:
    return path + SIDE_SUFFIX


def seal(path: str, hashing: Hashing) -> list[str]:
    """The part digests of the whole file (format 2: its side file written anew)."""
    if hashing.block is None:
        return list(_raw_part_digests(path, hashing.part, range(_count(path, hashing.part))).values())
    blocks = _hash_blocks(path, hashing.block, range(_count(path, hashing.block)))
    return _sealed_blocks(path, hashing, [blocks[index] for index in sorted(blocks)])


def reseal(path: str, hashing: Hashing, sealed: list[str], written: api.WriteRecord,
           copied_from: Source | None = None) -> list[str]:
    """The part digests after the writes ``written`` recorded (made with block=hashing.block) into a file whose
    digests were ``sealed``, reading only what those writes do not tell; the side file is updated. ``copied_from``
    (sealed_source()): the digests of the blocks written as copies of that file's blocks (a record made with
    from_copies) are that file's."""
    if hashing.block is None:
        count = _count(path, hashing.part)
        stale = set(range(len(sealed) - 1, count))  # the old last part may have grown
        for offset, length in written.ranges:
            stale.update(range(offset // hashing.part, min(count, -(-(offset + length) // hashing.part))))
        digests = (list(sealed) + [""] * count)[:count]
        for index, digest in _raw_part_digests(path, hashing.part, sorted(stale)).items():
            digests[index] = digest
        return digests
    block = hashing.block
    count = _count(path, block)
    old = _vouched_blocks(path, hashing, sealed)
    taken = written.digests
    if copied_from is not None:
        taken.update(written.copied_digests(copied_from.identity, copied_from.blocks))
    blocks: list[bytes | None] = [taken.get(index, old[index] if index < len(old) else None) for index in range(count)]
    missing = [index for index in range(count) if blocks[index] is None]
    for index, digest in _hash_blocks(path, block, missing).items():
        blocks[index] = digest
    return _sealed_blocks(path, hashing, typing.cast(typing.List[bytes], blocks))


class Source(collections.namedtuple("Source", (
    "identity",  # (st_dev, st_ino) of the file
    "blocks",  # list; digest of each whole block of it, None where its side file is not vouched for by the seal
))):
    __slots__ = ()


def sealed_source(path: str, hashing: Hashing, sealed: list[str]) -> Source | None:
    """A sealed layer whose blocks a merge copies into another file: its block digests that its seal vouches for
    (None: a format 1 store, no side files)."""
    if hashing.block is None:
        return None
    st = os.stat(path)
    blocks = _vouched_blocks(path, hashing, sealed)[:st.st_size // hashing.block]  # a short last block is no copy
    return Source((st.st_dev, st.st_ino), blocks)


def seal_new(path: str, hashing: Hashing, written: api.WriteRecord) -> list[str]:
    """The part digests of a file just written whole while ``written`` (a recording_new_image() with
    block=hashing.block) recorded it: the blocks it hashed from the write buffers are not read back (format 2; a
    format 1 store hashes the file)."""
    if hashing.block is None:
        return seal(path, hashing)
    return reseal(path, hashing, [], written)


def first_difference(path: str, hashing: Hashing, sealed: list[str]) -> int | None:
    """The offset in the file from which it no longer matches its seal (None: it matches): the first block that
    differs when the side file still matches the seal, else the start of the first part that differs."""
    if hashing.block is None:
        now = seal(path, hashing)
    else:
        blocks = _hash_blocks(path, hashing.block, range(_count(path, hashing.block)))
        now = _part_digests([blocks[index] for index in sorted(blocks)], hashing)
    differ = [index for index, (digest, was) in enumerate(zip(now, sealed)) if digest != was]
    if not differ:
        return None if len(now) == len(sealed) else min(len(now), len(sealed)) * hashing.part
    part = differ[0]
    if hashing.block is not None:
        per_part = hashing.part // hashing.block
        old = _vouched_blocks(path, hashing, sealed)
        current = [blocks[index] for index in sorted(blocks)]
        for index in range(part * per_part, min(len(old), len(current), (part + 1) * per_part)):
            if old[index] != current[index]:
                return index * hashing.block
    return part * hashing.part


# ---- helpers ----
def _count(path: str, unit: int) -> int:
    return max(1, -(-os.path.getsize(path) // unit))


def _part_digests(blocks: typing.Sequence[bytes], hashing: Hashing) -> list[str]:
    per_part = hashing.part // hashing.block
    return [hashlib.sha256(b"".join(blocks[start:start + per_part])).hexdigest()
            for start in range(0, max(1, len(blocks)), per_part)]


def _sealed_blocks(path: str, hashing: Hashing, blocks: list[bytes]) -> list[str]:
    """Write the side file of path (flushed: the manifest about to seal these digests relies on it)."""
    fd = os.open(side_path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        data = b"".join(blocks)
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return _part_digests(blocks, hashing)


def _vouched_blocks(path: str, hashing: Hashing, sealed: list[str]) -> list[bytes | None]:
    """The block digests of the side file, None for each block of a part whose entries do not hash to the sealed
    part digest (a side file missing, damaged, or left by a run killed before its seal)."""
    try:
        with open(side_path(path), "rb") as handle:
            side = handle.read()
    except FileNotFoundError:
        return []
    blocks: list[bytes | None] = [side[start:start + DIGEST] for start in range(0, len(side) - DIGEST + 1, DIGEST)]
    per_part = hashing.part // hashing.block
    for part, start in enumerate(range(0, len(blocks), per_part)):
        entries = blocks[start:start + per_part]
        if part >= len(sealed) or hashlib.sha256(b"".join(typing.cast(typing.List[bytes], entries))).hexdigest() != sealed[part]:
            blocks[start:start + per_part] = [None] * len(entries)
    return blocks


def _hash_blocks(path: str, block: int, indexes: typing.Iterable[int]) -> dict[int, bytes]:
    """sha256 of each block of the file with these indexes (the last block shorter), reading runs of neighbours
    together."""
    out: dict[int, bytes] = {}
    size = os.path.getsize(path)
    with open(path, "rb", buffering=0) as handle:
        for first, last in _runs(indexes):
            offset, end = first * block, min(size, (last + 1) * block)
            if offset >= end:
                out.update((index, hashlib.sha256(b"").digest()) for index in range(first, last + 1))
                continue
            while offset < end:
                data = _read(handle.fileno(), min(max(block, READ_CHUNK // block * block), end - offset), offset)
                if not data:
                    raise api.Qcow2Error("%s ends before its size (%d bytes) while it is hashed" % (path, size), path)
                view = memoryview(data)
                for start in range(0, len(data), block):
                    out[(offset + start) // block] = hashlib.sha256(view[start:start + block]).digest()
                offset += len(data)
    return out


def _raw_part_digests(path: str, part: int, indexes: typing.Iterable[int]) -> dict[int, str]:
    """Format 1: the sha256 of the bytes of each part with these indexes."""
    out = {}
    size = os.path.getsize(path)
    with open(path, "rb", buffering=0) as handle:
        for index in indexes:
            digest = hashlib.sha256()
            offset, end = index * part, min(size, (index + 1) * part)
            while offset < end:
                data = _read(handle.fileno(), min(READ_CHUNK, end - offset), offset)
                if not data:
                    break
                digest.update(data)
                offset += len(data)
            out[index] = digest.hexdigest()
    return out


def _read(fd: int, length: int, offset: int) -> bytes:
    """length bytes from offset, fewer only at the end of the file (block boundaries stay where they belong)."""
    parts, got = [], 0
    while got < length:
        data = os.pread(fd, length - got, offset + got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _runs(indexes: typing.Iterable[int]) -> typing.Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive indexes, in order."""
    first = last = None
    for index in sorted(indexes):
        if last is not None and index == last + 1:
            last = index
            continue
        if first is not None:
            yield first, last
        first = last = index
    if first is not None:
        yield first, last

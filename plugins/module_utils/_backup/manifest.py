# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The store's manifest: what the store holds, as JSON, replaced atomically.

A store is one directory per disk:

    <store>/manifest.json          this file
    <store>/.lock                  the store lock (lock.py)
    <store>/chain-0001/0000.qcow2  a full
    <store>/chain-0001/0000.qcow2.sha256  the sha256 of each 64 KiB of it (digests.py; not in format 1 stores)
    <store>/chain-0001/0001.qcow2  an increment; backing file "0000.qcow2" (relative), format qcow2
    <store>/chain-0002/0007.qcow2  the full of a newer chain, after a fallback

A layer is named after the point that wrote it and is never renamed; a merge keeps the full's file name and
gives it the merged point. Only the points listed here as sealed exist for restore: a layer a killed run left
behind is not listed, and the next run deletes it.

The manifest is written to a temporary file, flushed, renamed over manifest.json and the directory flushed:
a reader sees the old manifest or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import Qcow2Error

FORMAT = 2  # 2: layers hashed in blocks, with side files (digests.py); 1: parts hashed whole, still read
FORMATS = (1, 2)
MANIFEST = "manifest.json"
BITMAP_PREFIX = "bcq-backup-"
HASH_PART = 64 << 20  # a layer's sha256 is sealed per part of this many bytes of its file (digests.py)
HASH_BLOCK = 64 << 10  # ... each over the sha256 of its blocks of this many bytes, kept in the layer's side file
_CHAIN_DIR = re.compile(r"\Achain-[0-9]{4,}\Z")
_LAYER_FILE = re.compile(r"\A[0-9]{4,}\.qcow2\Z")


class StoreError(Qcow2Error):
    """A store problem a user can act on: a damaged manifest, a point that does not exist, a running backup."""


def new_manifest(hash_part: int = HASH_PART, hash_block: int = HASH_BLOCK) -> dict:
    return {"format": FORMAT, "store_id": os.urandom(4).hex(), "next_seq": 0, "next_chain": 1, "source": None,
            "chains": [], "merging": None, "pins": [], "last_verify": None, "hash_part": hash_part,
            "hash_block": hash_block}


def load(store: str) -> dict | None:
    """The store's manifest, or None when the store has none yet."""
    path = os.path.join(store, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise StoreError("The backup store manifest %s cannot be read as JSON (%s); the store's layers are intact, "
                         "but nothing will be written until it is repaired or the store moved aside" % (path, err),
                         path) from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        raise StoreError("%s is not a backup store manifest of format %s" % (path, " or ".join(map(str, FORMATS))), path)
    problem = _malformed(data)
    if problem:
        raise StoreError("The backup store manifest %s is damaged: %s; nothing will be written until it is repaired or "
                         "the store moved aside" % (path, problem), path)
    return data


def _malformed(data: dict) -> str | None:
    """What is wrong with a manifest's structure; the names it gives files must stay inside the store."""
    for key in ("store_id", "next_seq", "next_chain", "chains", "pins", "hash_part"):
        if key not in data:
            return "it has no %r" % key
    if not isinstance(data["chains"], list) or not isinstance(data["pins"], list):
        return "chains and pins must be lists"
    if data["format"] >= 2 and not (isinstance(data.get("hash_block"), int) and isinstance(data["hash_part"], int) and
                                    0 < data["hash_block"] <= data["hash_part"] and data["hash_part"] % data["hash_block"] == 0):
        return "hash_part must be a multiple of hash_block"
    for chain in data["chains"]:
        if not isinstance(chain, dict) or not _CHAIN_DIR.match(str(chain.get("dir"))) or \
                not isinstance(chain.get("points"), list):
            return "a chain is not {dir: chain-NNNN, points: [...]}: %r" % (chain,)
        for point in chain["points"]:
            if not isinstance(point, dict) or not _LAYER_FILE.match(str(point.get("file"))) or \
                    not isinstance(point.get("seq"), int):
                return "a point of %s is not {seq: N, file: NNNN.qcow2, ...}: %r" % (chain["dir"], point)
    return None


def loaded(store: str) -> dict:
    """The manifest of an existing store; StoreError when store is none."""
    manifest = load(store) if os.path.isdir(store) else None
    if manifest is None:
        raise StoreError("%s is not a backup store (it has no %s)" % (store, MANIFEST), store)
    return manifest


def save(store: str, manifest: dict) -> None:
    """Replace manifest.json atomically and durably."""
    fd, tmp = tempfile.mkstemp(prefix="." + MANIFEST + ".", suffix=".tmp", dir=store)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(store, MANIFEST))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(store)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading a manifest ----
def bitmap_name(manifest: dict, seq: int) -> str:
    """The source bitmap that records the changes after point seq. The store id in the name keeps two stores of
    one image (and anyone else's bitmaps) apart: a store only ever removes bitmaps with its own prefix."""
    return "%s%s-%d" % (BITMAP_PREFIX, manifest["store_id"], seq)


def own_bitmap(manifest: dict, name: str) -> bool:
    return name.startswith("%s%s-" % (BITMAP_PREFIX, manifest["store_id"]))


def current_chain(manifest: dict) -> dict | None:
    return manifest["chains"][-1] if manifest["chains"] else None


def all_points(manifest: dict) -> list[tuple[dict, dict]]:
    """(chain, point) for every sealed point, oldest first."""
    return [(chain, point) for chain in manifest["chains"] for point in chain["points"]]


def find_point(manifest: dict, seq: int | None) -> tuple[dict, dict]:
    """(chain, point) of point seq (None: the latest); StoreError naming the points there are when it is not there."""
    points = all_points(manifest)
    if not points:
        raise StoreError("The backup store holds no point yet")
    if seq is None:
        return points[-1]
    for chain, point in points:
        if point["seq"] == seq:
            return chain, point
    raise StoreError("The backup store has no point %d; it has %s" % (seq, ", ".join(str(p["seq"]) for _c, p in points)))


def layer_path(store: str, chain: dict, point: dict) -> str:
    return os.path.join(store, chain["dir"], point["file"])


def layer_name(seq: int) -> str:
    return "%04d.qcow2" % seq


def pinned(manifest: dict) -> set[int]:
    return {pin["point"] for pin in manifest["pins"]}


def typed_points(points: typing.Iterable[tuple[dict, dict]]) -> list[dict]:
    """Points as a module returns them: each with the id of its chain."""
    return [dict(point, chain=chain["id"]) for chain, point in points]

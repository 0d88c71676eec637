# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Merge the oldest increment of a chain into its full (a synthetic full), safe to kill at every step.

1. The manifest records the merge (chain, the full's point, the increment's point) before anything is written:
   from here on the full's own point is retiring and is no longer offered for restore.
2. The engine commits the increment into the full (commit.py: the chain reads the same from its top at every
   instant) and re-points the layer above it at the full (by the same relative name spelling). When the
   increment is the chain's top it is not emptied (qemu-img commit -d): its data, now in the full too, still reads
   the same until step 3 deletes it.
3. The increment's file is deleted.
4. The manifest gives the full's file to the merged point, with the new sha256 of the parts of the full the
   commit wrote (and of the re-pointed layer, whose header changed), and forgets the merge. In a format 2 store
   the blocks the commit wrote whole are copies of the increment's blocks, whose digests the increment's side file
   holds (vouched for by its seal, read before step 3): nothing is hashed but what the commit wrote in part, and
   the merge costs the size of the increment, not of the full (digests.py).

Until step 3 the full plus the increment still read as the increment's point, so a run killed anywhere leaves
every other sealed point intact, and the next run on the store finishes the merge (finish_merge) first.
"""

from __future__ import annotations

import contextlib
import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .digests import Source, hashing_of, reseal, seal, sealed_source, side_path
from .manifest import StoreError, fsync_dir, layer_path, pinned, save


def merge_oldest(store: str, manifest: dict, chain: dict, policy: api.ChainPolicy | None = None) -> dict:
    """Merge the chain's second point into its first; the merged point."""
    full, increment = chain["points"][0], chain["points"][1]
    held = pinned(manifest) & {p["seq"] for p in chain["points"]}
    if held:
        raise StoreError("Point %d is in use by an instant restore: its chain cannot be merged" % min(held))
    if chain.get("damaged"):
        raise StoreError("Chain %s was found damaged by a verify (points %s): it is not merged"
                         % (chain["dir"], ", ".join(str(seq) for seq in chain["damaged"])))
    manifest["merging"] = {"chain": chain["id"], "full": full["seq"], "increment": increment["seq"]}
    save(store, manifest)
    return finish_merge(store, manifest, policy, started_here=True)


def finish_merge(store: str, manifest: dict, policy: api.ChainPolicy | None = None, started_here: bool = False) -> dict:
    """Finish the merge the manifest records: right after merge_oldest started it (started_here: this process saw
    every write into the full and the layer above, and rehashes only what it wrote) or after a crash (both are
    rehashed whole: the killed run's writes were not seen)."""
    merging = manifest["merging"]
    chain = next(c for c in manifest["chains"] if c["id"] == merging["chain"])
    full = next(p for p in chain["points"] if p["seq"] == merging["full"])
    increment = next(p for p in chain["points"] if p["seq"] == merging["increment"])
    full_path, increment_path = layer_path(store, chain, full), layer_path(store, chain, increment)
    rest = [p for p in chain["points"] if p["seq"] not in (full["seq"], increment["seq"])]
    above = layer_path(store, chain, rest[0]) if rest else None  # its header will name the full
    hashing = hashing_of(manifest)
    source = None
    with contextlib.ExitStack() as records:
        # the blocks the commit writes whole into the full are copies of the increment's: no hashing
        written = records.enter_context(api.recording_writes(full_path, hashing.block, from_copies=True))
        written_above = records.enter_context(api.recording_writes(above, hashing.block)) if above else None
        if os.path.exists(increment_path):
            if started_here:  # the increment's block digests, vouched for by its seal, before it goes
                source = sealed_source(increment_path, hashing, increment["sha256"])
            top = layer_path(store, chain, chain["points"][-1])
            # the increment is deleted next: emptying it first, when it is the chain's top, would only cost time
            api.commit(top, top=increment_path, base=full_path, policy=policy, empty_top=False)
            if not started_here:
                _give_back_leaks(full_path, policy)
            os.unlink(increment_path)
            if os.path.exists(side_path(increment_path)):
                os.unlink(side_path(increment_path))
            fsync_dir(os.path.dirname(full_path))

    def digests(path: str, point: dict, record: api.WriteRecord | None, copied_from: Source | None = None) -> list[str]:
        return reseal(path, hashing, point["sha256"], record, copied_from) if started_here else seal(path, hashing)

    merged = dict(increment, file=full["file"], level="full", merged=sorted(set(full.get("merged", [])) | {full["seq"]}),
                  sha256=digests(full_path, full, written, source), file_bytes=os.path.getsize(full_path))
    if above:
        rest[0] = dict(rest[0], sha256=digests(above, rest[0], written_above), file_bytes=os.path.getsize(above))
    chain["points"] = [merged] + rest
    manifest["merging"] = None
    save(store, manifest)
    return merged


def _give_back_leaks(path: str, policy: api.ChainPolicy | None) -> None:
    """A commit an earlier run began and ENOSPC or a kill stopped leaves clusters leaked in the full (as qemu
    would); give them back so that the sealed full is clean under qemu-img check. (A commit that ran to its end
    in this process leaves none: the engine's images pass qemu-img check.)"""
    report = api.check(path, policy=policy)
    if report["result"].get("leaks"):
        api.check(path, repair="leaks", policy=policy)

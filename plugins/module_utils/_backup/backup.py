# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""One backup point of an image nobody runs into a store, then retention: the plan (read only) and the run.

The run, under the store lock: finish what a killed run left (recover.py); decide the level (level.py); add
the next point's bitmap to the source (tracking.py); write the layer (layer.py); seal the point in the
manifest; remove the bitmap the layer copied the changes of; apply retention (retention.py, merge.py).
"""

from __future__ import annotations

import copy
import datetime
import os
import shutil
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .digests import hashing_of
from .layer import Written, write_full, write_increment
from .level import DEFAULT_MAX_CHAIN_LENGTH, Decision, SourceFacts, decide, source_facts
from .lock import store_lock
from .manifest import current_chain, layer_name, layer_path, load, loaded, new_manifest, save
from .merge import merge_oldest
from .recover import recover
from .retention import Step, now_text, plan as retention_plan
from .tracking import OfflineTracking


class Request(typing.NamedTuple):
    store: str
    source: str
    level: str = "auto"
    max_chain_length: int = DEFAULT_MAX_CHAIN_LENGTH
    keep: typing.Optional[int] = None
    keep_days: typing.Optional[float] = None
    compress: bool = False  # the new layer's data clusters (merges write theirs plain, as qemu-img commit does)


class BackupPlan(typing.NamedTuple):
    level: str
    reason: str
    seq: int
    bytes_to_copy: int  # guest bytes the layer copies or writes as zero clusters (a full: at most this much)
    retention: typing.List[Step]


def check_request(request: Request) -> None:
    if request.max_chain_length < 1:
        raise api.InvalidArgumentError("max_chain_length must be at least 1, not %d" % request.max_chain_length)
    if request.keep is not None and request.keep < 1:
        raise api.InvalidArgumentError("keep must be at least 1 (the latest point is always kept), not %d" % request.keep)
    if request.keep_days is not None and request.keep_days < 0:
        raise api.InvalidArgumentError("keep_days must not be negative, not %s" % request.keep_days)
    if os.path.exists(request.store) and not os.path.isdir(request.store):
        raise api.InvalidArgumentError("The backup store %s is not a directory" % request.store, request.store)
    if not os.path.isdir(os.path.dirname(os.path.abspath(request.store))):
        raise api.InvalidArgumentError("The directory holding the backup store %s does not exist" % request.store,
                                       request.store)
    api.require_qcow2(request.source)


def plan_backup(request: Request, policy: api.ChainPolicy | None = None, now: datetime.datetime | None = None,
                tracking_for: typing.Callable[..., OfflineTracking] = OfflineTracking) -> BackupPlan:
    """What run_backup would do, read only (a merge a killed run left is assumed finished, as the run will)."""
    check_request(request)
    now = now or _now()
    manifest = (load(request.store) if os.path.isdir(request.store) else None) or new_manifest()
    if manifest["merging"]:
        manifest = _as_merged(manifest)
    tracking = tracking_for(request.source, manifest, policy)
    facts = tracking.planned_facts(source_facts(request.source, policy))
    decision = decide(request.store, manifest, facts, request.level, request.max_chain_length)
    if facts.can_track:
        tracking.refuse_if_busy()
    if decision.level == "full":
        nbytes = api.measure(request.source, policy=policy, force_share=tracking.reads_shared)["required"]
    else:
        chain = current_chain(manifest)
        previous = layer_path(request.store, chain, chain["points"][-1])

        def copy_dry_run(ranges: list) -> int:
            dry = api.copy_ranges(request.source, os.path.join(request.store, chain["dir"],
                                                               layer_name(manifest["next_seq"])),
                                  ranges, backing_file=os.path.basename(previous), backing_format="qcow2",
                                  force_share=True, policy=policy, dry_run=True)
            return dry.bytes_copied + dry.bytes_zeroed  # as the layer reports it (layer.write_increment)
        nbytes = tracking.planned_bytes(decision.tracking, copy_dry_run)
    after = copy.deepcopy(manifest)
    _seal(after, decision, _point(manifest["next_seq"], decision, now, facts, None, None, tracking.consistency,
                                  request.compress), facts)
    return BackupPlan(decision.level, decision.reason, manifest["next_seq"], nbytes,
                      retention_plan(after, request.keep, request.keep_days, now))


def _as_merged(manifest: dict) -> dict:
    """A copy of the manifest as it will be once the recorded merge is finished (the run finishes it first)."""
    out = copy.deepcopy(manifest)
    merging = out["merging"]
    chain = next(c for c in out["chains"] if c["id"] == merging["chain"])
    full = next(p for p in chain["points"] if p["seq"] == merging["full"])
    chain["points"] = [dict(p, file=full["file"], level="full") if p["seq"] == merging["increment"] else p
                       for p in chain["points"] if p is not full]
    out["merging"] = None
    return out


def run_backup(request: Request, policy: api.ChainPolicy | None = None, now: datetime.datetime | None = None,
               tracking_for: typing.Callable[..., OfflineTracking] = OfflineTracking) -> dict:
    """Take one point and apply retention; what was done (the point, the level and why, the merges).

    tracking_for(source, manifest, policy) gives the changed-block tracking (tracking.py): the engine's own for an
    image nobody runs; a live flow passes one that works with libvirt checkpoints and the frozen image below an
    overlay (_live/backup_tracking.py)."""
    check_request(request)
    now = now or _now()
    if not os.path.isdir(request.store):
        os.mkdir(request.store)
    with store_lock(request.store, "backup of %s" % request.source):
        manifest = load(request.store) or new_manifest()
        recovered = recover(request.store, manifest, policy)
        tracking = tracking_for(request.source, manifest, policy)
        can_track = source_facts(request.source, policy).can_track
        latest = current_chain(manifest)["points"][-1]["bitmap"] if current_chain(manifest) else None
        stale = tracking.remove_own_except(latest) if can_track else []
        seq = manifest["next_seq"]
        with tracking.frozen(seq, can_track) as bitmap:
            # read once the point's image holds still: a running domain's bitmaps are only on disk then
            facts = source_facts(request.source, policy)
            decision = decide(request.store, manifest, facts, request.level, request.max_chain_length)
            point = _write(request, manifest, decision, facts, tracking, seq, bitmap, now, policy)
        _seal(manifest, decision, point, facts)
        save(request.store, manifest)
        if bitmap is not None:
            stale += tracking.remove_own_except(bitmap)
        steps = apply_retention(request, manifest, now, policy)
    return {"point": point, "level": decision.level, "reason": decision.reason, "recovered": recovered,
            "bitmaps_removed": stale, "retention": [step._asdict() for step in steps]}


def _write(request: Request, manifest: dict, decision: Decision, facts: SourceFacts, tracking: OfflineTracking,
           seq: int, bitmap: str | None, now: datetime.datetime, policy: api.ChainPolicy | None) -> dict:
    if decision.level == "full":
        directory = os.path.join(request.store, "chain-%04d" % manifest["next_chain"])
        os.makedirs(directory, exist_ok=True)
        written = write_full(request.source, os.path.join(directory, layer_name(seq)), hashing_of(manifest), policy,
                             request.compress)
    else:
        chain = current_chain(manifest)
        latest = chain["points"][-1]
        # a grown source needs nothing more: past the shorter layer below, the new layer reads zeros, as the
        # source does where nothing was written (qemu marks what is written there)
        ranges = tracking.changed_ranges(decision.tracking).ranges
        written = write_increment(request.source, os.path.join(request.store, chain["dir"], layer_name(seq)),
                                  layer_path(request.store, chain, latest), ranges, hashing_of(manifest), policy,
                                  request.compress)
    return _point(seq, decision, now, facts, bitmap, written, tracking.consistency, request.compress)


def _point(seq: int, decision: Decision, now: datetime.datetime, facts: SourceFacts, bitmap: str | None,
           written: Written | None, consistency: str = OfflineTracking.consistency, compressed: bool = False) -> dict:
    """The point's manifest record; without written (a plan), as far as it is known before the copy."""
    return {"seq": seq, "time": now_text(now), "level": decision.level, "reason": decision.reason,
            "file": written.file if written else layer_name(seq), "sha256": written.sha256 if written else None,
            "bytes_copied": written.bytes_copied if written else None,
            "file_bytes": written.file_bytes if written else None, "compressed": compressed,
            "virtual_size": facts.virtual_size, "bitmap": bitmap, "consistency": consistency, "state": "sealed"}


def _seal(manifest: dict, decision: Decision, point: dict, facts: SourceFacts) -> None:
    """Add the point to the manifest (a full opens a new chain)."""
    if decision.level == "full":
        manifest["chains"].append({"id": manifest["next_chain"], "dir": "chain-%04d" % manifest["next_chain"],
                                   "points": []})
        manifest["next_chain"] += 1
        if manifest["last_verify"] and not manifest["last_verify"]["ok"]:
            manifest["last_verify"] = None  # answered by this new full (the damaged chain stays marked)
    current_chain(manifest)["points"].append(point)
    manifest["next_seq"] = point["seq"] + 1
    manifest["source"] = {"path": facts.path, "identity": facts.identity}


def retain(store: str, keep: int | None = None, keep_days: float | None = None,
           policy: api.ChainPolicy | None = None, now: datetime.datetime | None = None) -> list[Step]:
    """Apply retention alone (no new point), under the store lock; the steps taken."""
    with store_lock(store, "retention"):
        manifest = loaded(store)
        recover(store, manifest, policy)
        return apply_retention(Request(store, "", keep=keep, keep_days=keep_days), manifest, now or _now(), policy)


def apply_retention(request: Request, manifest: dict, now: datetime.datetime,
                    policy: api.ChainPolicy | None) -> list[Step]:
    steps = retention_plan(manifest, request.keep, request.keep_days, now)
    for step in steps:
        chain = next(c for c in manifest["chains"] if c["id"] == step.chain)
        if step.action == "merge":
            merge_oldest(request.store, manifest, chain, policy)
        else:
            manifest["chains"].remove(chain)
            save(request.store, manifest)
            shutil.rmtree(os.path.join(request.store, chain["dir"]))
    return steps


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

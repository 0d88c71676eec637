# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Verify a store, at three levels; the result goes into the manifest: a failed verify makes the next ``auto``
backup a full, and a chain with a bad layer is marked damaged, never to be merged (retention.py).

- quick: every sealed layer exists, hashes to the sha256 sealed in the manifest (bit rot, a stray write),
  passes the engine's check (qemu-img check's rules), and names the layer below it relatively, as qcow2.
  A bad layer flags its point and every later point of its chain (they read through it).
- full: quick, then the chain up to a point read end to end (every data cluster, decompressed): the point asked
  for, or the latest point of every chain (reading every point would cost the disk's size once per point).
- audit: quick, then the source compared with the latest point, when the source has not changed since that
  point (its tracking bitmap is empty): a difference is a write the tracking missed.
"""

from __future__ import annotations

import datetime
import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .digests import Hashing, first_difference, hashing_of
from .lock import store_lock
from .manifest import StoreError, find_point, layer_path, loaded, save
from .recover import recover

LEVELS = ("quick", "full", "audit")


def verify(store: str, level: str = "quick", source: str | None = None,
           policy: api.ChainPolicy | None = None, record: bool = True, point: int | None = None) -> dict:
    """The verdict; recorded in the manifest (where the next backup reads it) unless record is False (check mode:
    then nothing is written, not even what recover() would finish)."""
    if level not in LEVELS:
        raise api.InvalidArgumentError("level must be one of %s, not %r" % (", ".join(LEVELS), level))
    if level == "audit" and not source:
        raise api.InvalidArgumentError("An audit compares the source with the store: give the source image")
    with store_lock(store, "verify (%s)" % level):
        manifest = loaded(store)
        if record:
            recover(store, manifest, policy)
        elif manifest["merging"]:  # finishing it writes, and until then the full's digests are stale
            raise StoreError("A merge in the backup store %s is unfinished; the next run that is not in check mode "
                             "finishes it before it verifies" % store, store)
        problems, bad = quick(store, manifest, policy)
        audited = None
        if level == "full":
            if point is not None:
                find_point(manifest, point)
            problems += read_through(store, manifest, bad, point, policy)
        elif level == "audit":
            audited, found = audit(store, manifest, source, policy)
            problems += found
        verdict = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "level": level,
                   "ok": not problems, "problems": problems, "bad_points": sorted(bad)}
        if record:
            manifest["last_verify"] = verdict
            for chain in manifest["chains"]:
                chain["damaged"] = sorted(bad & {p["seq"] for p in chain["points"]})
            save(store, manifest)
        return dict(verdict, audited=audited)


def quick(store: str, manifest: dict, policy: api.ChainPolicy | None) -> tuple[list[str], set[int]]:
    problems: list[str] = []
    bad: set[int] = set()
    for chain in manifest["chains"]:
        broken = False
        for index, point in enumerate(chain["points"]):
            found = _layer_problems(store, chain, index, hashing_of(manifest), policy)
            problems += found
            broken = broken or bool(found)
            if broken:
                bad.add(point["seq"])
    return problems, bad


def _layer_problems(store: str, chain: dict, index: int, hashing: Hashing, policy: api.ChainPolicy | None) -> list[str]:
    point = chain["points"][index]
    path = layer_path(store, chain, point)
    what = "point %d (%s/%s)" % (point["seq"], chain["dir"], point["file"])
    if not os.path.isfile(path):
        return ["%s: the layer is missing" % what]
    out = []
    where = first_difference(path, hashing, point["sha256"])
    if where is not None:
        out.append("%s: the layer's sha256 differs from the one sealed in the manifest (from byte %d of the file)"
                   % (what, where))
    try:
        info = api.image_info(path, backing_chain=False, policy=policy)[0]
        expected = chain["points"][index - 1]["file"] if index else None
        if info.get("backing-filename") != expected or (expected and info.get("backing-filename-format") != "qcow2"):
            out.append("%s: its backing file is %r, not %r as qcow2" % (what, info.get("backing-filename"), expected))
        report = api.check(path, policy=policy)
        if report["exit_code"] != 0:
            out.append("%s: the check found problems: %s" % (what, "; ".join(report["messages"][:3]) or report["result"]))
    except api.Qcow2Error as err:
        out.append("%s: %s" % (what, err))
    return out


def read_through(store: str, manifest: dict, bad: set[int], point: int | None,
                 policy: api.ChainPolicy | None) -> list[str]:
    """Read the chain up to point (None: the latest point of every chain) end to end."""
    problems = []
    for chain in manifest["chains"]:
        for point_record in chain["points"]:
            if point_record["seq"] in bad or (point_record["seq"] != point if point is not None
                                              else point_record is not chain["points"][-1]):
                continue
            try:
                api.read_view(layer_path(store, chain, point_record), policy=policy)
            except api.Qcow2Error as err:
                bad.add(point_record["seq"])
                problems.append("point %d cannot be read end to end: %s" % (point_record["seq"], err))
    return problems


def audit(store: str, manifest: dict, source: str, policy: api.ChainPolicy | None) -> tuple[int | None, list[str]]:
    """(the point compared, problems); no point compared when the source changed since the latest point."""
    chain = manifest["chains"][-1] if manifest["chains"] else None
    if chain is None:
        return None, ["the store holds no point to audit"]
    latest = chain["points"][-1]
    if latest["bitmap"] is None:
        return None, []
    dirty = api.dirty_ranges(source, latest["bitmap"], force_share=True, policy=policy)
    if dirty.dirty_bytes:
        return None, []  # changed since: nothing to compare with yet
    differ = api.differing_ranges(source, layer_path(store, chain, latest), force_share=True, policy=policy)
    if not differ:
        return latest["seq"], []
    return latest["seq"], ["the source differs from point %d in %d bytes (first at offset %d) although its tracking "
                           "bitmap %s records no write since: writes were missed"
                           % (latest["seq"], sum(n for _o, n in differ), differ[0][0], latest["bitmap"])]

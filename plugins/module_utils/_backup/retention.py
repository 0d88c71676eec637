# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Which points retention drops, and how: the oldest points of a chain are merged into its full one by one; an
older chain all of whose points are dropped is deleted whole.

A point is kept when any rule set keeps it: ``keep`` (the newest N points of the store) or ``keep_days`` (points
younger than that). Neither set: every point is kept. The latest point is always kept, and a chain an instant
restore reads through is left alone whole: a merge writes into its full and re-points a layer above, files the
restored VM's qemu holds open. A chain a verify found damaged is never merged (that would seal the damage under a
new sha256), only dropped whole once none of its points is kept.
"""

from __future__ import annotations

import datetime
import typing

from .manifest import all_points, current_chain, pinned


class Step(typing.NamedTuple):
    action: str  # "merge" (the chain's second point into its first) or "drop_chain"
    chain: int
    points: typing.List[int]  # merge: [full, increment]; drop_chain: every point of the chain


def kept(manifest: dict, keep: int | None, keep_days: float | None, now: datetime.datetime) -> set[int]:
    points = [p for _c, p in all_points(manifest)]
    if keep is None and keep_days is None:
        return {p["seq"] for p in points}
    out = set()
    if keep is not None:
        out.update(p["seq"] for p in points[-max(keep, 1):])
    if keep_days is not None:
        limit = now - datetime.timedelta(days=keep_days)
        out.update(p["seq"] for p in points if parse_time(p["time"]) >= limit)
    if points:
        out.add(points[-1]["seq"])
    return out


def plan(manifest: dict, keep: int | None, keep_days: float | None, now: datetime.datetime) -> list[Step]:
    """The steps retention takes, in order, as if each was done (the manifest is not changed)."""
    keeping = kept(manifest, keep, keep_days, now)
    pins = pinned(manifest)
    steps = []
    latest_chain = current_chain(manifest)
    for chain in manifest["chains"]:
        seqs = [p["seq"] for p in chain["points"]]
        if set(seqs) & pins:
            continue
        if chain is not latest_chain and not set(seqs) & keeping:
            steps.append(Step("drop_chain", chain["id"], seqs))
            continue
        if chain.get("damaged"):
            continue  # a merge would seal the damaged data under a new sha256: the chain waits to be dropped whole
        # the first point absorbs the next while the first is not kept: the merged point takes the second's seq
        while len(seqs) > 1 and seqs[0] not in keeping:
            steps.append(Step("merge", chain["id"], seqs[:2]))
            seqs = seqs[1:]
    return steps


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")


def now_text(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S%z")

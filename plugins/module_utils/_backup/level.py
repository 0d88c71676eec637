# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Full or incremental: whether the store's current chain can take an increment from this source, and why not.

An increment is only as good as the record of what changed since the chain's latest point. Anything that
breaks that record, or the chain itself, makes ``auto`` take a full instead (``incremental`` fails with the
same reason). The reasons are checked in this order, the first one found is reported.
"""

from __future__ import annotations

import os
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .manifest import StoreError, current_chain, layer_path

LEVELS = ("auto", "full", "incremental")
DEFAULT_MAX_CHAIN_LENGTH = 30


class Decision(typing.NamedTuple):
    level: str  # full or incremental
    reason: str  # why (for an increment: what it builds on)
    tracking: typing.Optional[str]  # the source bitmap the increment copies the changes of


class SourceFacts(typing.NamedTuple):
    path: str
    identity: typing.Optional[typing.List[int]]  # [st_dev, st_ino]
    virtual_size: int
    can_track: bool  # holds persistent bitmaps (qcow2, compat 1.1)
    bitmaps: typing.List[dict]  # list_bitmaps' entries for the image itself


def source_facts(path: str, policy: api.ChainPolicy | None = None) -> SourceFacts:
    info = api.image_info(path, backing_chain=False, force_share=True, policy=policy, bitmaps=True)[0]
    compat = info.get("format-specific", {}).get("data", {}).get("compat")
    identity = api.file_identity(path)
    return SourceFacts(os.path.abspath(path), list(identity) if identity else None, info["virtual-size"],
                       info["format"] == "qcow2" and compat == "1.1", info.get("bitmaps") or [])


def decide(store: str, manifest: dict, facts: SourceFacts, level: str,
           max_chain_length: int = DEFAULT_MAX_CHAIN_LENGTH) -> Decision:
    if level not in LEVELS:
        raise api.InvalidArgumentError("level must be one of %s, not %r" % (", ".join(LEVELS), level))
    if level == "full":
        return Decision("full", "a full was asked for", None)
    broken = chain_broken(store, manifest, facts, max_chain_length)
    if broken is None:
        tracking = current_chain(manifest)["points"][-1]["bitmap"]
        return Decision("incremental", "the changes recorded by bitmap %s since point %d"
                        % (tracking, current_chain(manifest)["points"][-1]["seq"]), tracking)
    if level == "incremental":
        raise StoreError("An incremental backup of %s cannot be taken: %s. Run with level auto or full to start a "
                         "new chain" % (facts.path, broken), facts.path)
    return Decision("full", broken, None)


def chain_broken(store: str, manifest: dict, facts: SourceFacts, max_chain_length: int) -> str | None:
    """Why the current chain cannot take an increment from this source; None when it can."""
    chain = current_chain(manifest)
    if chain is None or not chain["points"]:
        return "the store holds no chain yet"
    latest = chain["points"][-1]
    source = manifest["source"]
    if not facts.can_track:
        return "the source cannot hold dirty bitmaps (only qcow2 images of compat 1.1 can): every point is a full"
    verify = manifest.get("last_verify")
    if verify and not verify["ok"]:
        return "the last verify (%s, %s) found problems: %s" % (
            verify["level"], verify["time"], "; ".join(verify["problems"][:3]))
    if source["path"] != facts.path:
        return "the source is now %s; the chain was taken from %s" % (facts.path, source["path"])
    if source["identity"] != facts.identity:
        return "the source %s was replaced by another file since point %d" % (facts.path, latest["seq"])
    if facts.virtual_size < latest["virtual_size"]:
        return "the source shrank from %d to %d bytes since point %d" % (
            latest["virtual_size"], facts.virtual_size, latest["seq"])
    if len(chain["points"]) >= max_chain_length:
        return "the chain reached max_chain_length (%d points)" % max_chain_length
    for point in chain["points"]:
        if not os.path.isfile(layer_path(store, chain, point)):
            return "layer %s of point %d is missing from the store" % (point["file"], point["seq"])
    return bitmap_unusable(facts, latest["bitmap"])


def bitmap_unusable(facts: SourceFacts, name: str | None) -> str | None:
    if name is None:
        return "the latest point recorded no bitmap to track changes with"
    found = next((b for b in facts.bitmaps if b["name"] == name), None)
    if found is None:
        return "the tracking bitmap %s is missing from the source" % name
    if found["in_use"]:
        return "the tracking bitmap %s was left in use (inconsistent) by a writer that did not close the image" % name
    if not found["enabled"]:
        return "the tracking bitmap %s is not auto (disabled): it stopped recording writes" % name
    if not found["trusted"]:
        return "the tracking bitmap %s cannot be trusted: %s" % (name, found["reason"])
    return None

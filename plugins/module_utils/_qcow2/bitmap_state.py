# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""A bitmap brought to a wanted state (present, cleared or absent; enabled or not; with the bits of other
bitmaps merged in): the plan says which of qemu-img bitmap's operations that takes, and what the bitmap
will look like, without writing; the run does them. A plan with no operation changes nothing, which is
what makes the same wanted state idempotent.
"""

from __future__ import annotations

import contextlib
import typing

from . import bitmap_ops as ops
from .bitmap_bits import join_ranges
from .bitmap_store import BitmapChange
from .chain import Chain, open_chain
from .errors import InvalidArgumentError
from .paths import same_file

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .bitmaps import Bitmap
    from .chain import ChainPolicy, Image
    from .image import Qcow2Image

Action = typing.Tuple[str, typing.Any]  # (verb, argument): ("add", (granularity, enabled)), ("merge", MergeSource)...

STATES = ("present", "cleared", "absent")


class MergeSource:
    """Bits to merge: bitmap ``name`` of ``img``, or with ``chain`` (a Chain), of every layer of it that holds it."""

    def __init__(self, name: str, img: Image | None = None, chain: Chain | None = None) -> None:
        self.name = name
        self.img = img
        self.chain = chain

    def ranges(self, target: Qcow2Image) -> list[tuple[int, int]]:
        if self.chain is not None:
            return ops.chain_ranges(self.chain, self.name, from_top=False, need_enabled=False)[0]
        return ops.source_ranges(target, self.img, self.name)

    def describe(self) -> str:
        where = "the chain from %s down" % self.chain.top.path if self.chain is not None else self.img.path
        return "merge %s of %s" % (self.name, where)


def info(img: Qcow2Image, bitmap: Bitmap) -> dict:
    """A bitmap as a dict for a module: describe()'s keys and dirty_bytes (None for an inconsistent one)."""
    entry = next(d for d in ops.describe(img) if d["name"] == bitmap.name)
    entry["dirty_bytes"] = None if entry["in_use"] else _bytes(ops.image_ranges(img, bitmap))
    return entry


def plan(img: Qcow2Image, name: str, state: str = "present", granularity: int | None = None,
         enabled: bool | None = None, sources: typing.Sequence[MergeSource] = ()) -> tuple[list[Action], dict | None, dict | None]:
    """(actions, before, after): the operations to run, in order, as (verb, argument) pairs, and the bitmap as a dict
    before and after (None when absent). Raises what the run would refuse."""
    if state not in STATES:
        raise InvalidArgumentError("state must be one of %s (got %r)" % (", ".join(STATES), state))
    if not name:
        raise InvalidArgumentError("Bitmap name cannot be empty", img.path)
    ops.settle(img)
    existing = ops.find(img, name)
    before = info(img, existing) if existing is not None else None
    if state == "absent":
        if granularity is not None or enabled is not None or sources:
            raise InvalidArgumentError("A bitmap to remove takes no granularity, enabled or bitmaps to merge")
        return ([("remove", None)] if existing is not None else []), before, None
    actions: list[Action] = []
    if existing is None:
        granularity = ops.default_granularity(img) if granularity is None else granularity
        enabled = True if enabled is None else enabled
        ops.add(img, name, granularity, enabled, dry_run=True)  # qemu's checks, without writing
        actions.append(("add", (granularity, enabled)))
        ranges = []
    else:
        if granularity is not None and granularity != existing.granularity:
            raise InvalidArgumentError("Bitmap '%s' of %s has a granularity of %d bytes, not %d; it cannot be changed "
                                       "(remove the bitmap and add it again, which starts it empty)"
                                       % (name, img.path, existing.granularity, granularity), img.path)
        granularity = existing.granularity
        if enabled is not None and enabled != existing.enabled:
            ops.usable(img, name)
            actions.append(("enable" if enabled else "disable", None))
        enabled = existing.enabled if enabled is None else enabled
        ranges = ops.image_ranges(img, ops.usable(img, name)) if sources or state == "cleared" else None
        if state == "cleared" and ranges:
            actions.append(("clear", None))
            ranges = []
    for source in sources:
        new = _granules(source.ranges(img), granularity, img.size)
        merged = join_ranges(ranges + new)
        if _bytes(merged) != _bytes(ranges):
            actions.append(("merge", source))
        ranges = merged
    after = before
    if actions:
        after = dict(before or {}, name=name, granularity=granularity, flags=["auto"] if enabled else [],
                     in_use=False, enabled=enabled, trusted=enabled,
                     reason=None if enabled else ops.disabled_reason(img, name))
        after["dirty_bytes"] = _bytes(ranges) if ranges is not None else before["dirty_bytes"]
    return actions, before, after


def run(img: Qcow2Image, name: str, actions: list[Action]) -> dict | None:
    """Do the planned operations, all switched to with one header write (a crash leaves the bitmaps as they were or
    as planned); returns the bitmap as a dict afterwards (None when removed)."""
    change = BitmapChange(img)
    for verb, argument in actions:
        if verb == "add":
            change.add(name, argument[0], argument[1])
        elif verb in ("enable", "disable"):
            change.set_enabled(name, verb == "enable")
        elif verb == "merge":
            change.merge(name, argument.ranges(img))
        else:  # remove, clear
            getattr(change, verb)(name)
    change.commit()
    bitmap = ops.find(img, name)
    return info(img, bitmap) if bitmap is not None else None


def _granules(ranges: list[tuple[int, int]], granularity: int, size: int) -> list[tuple[int, int]]:
    return join_ranges([(start // granularity * granularity, min(size, -(-end // granularity) * granularity))
                        for start, end in ranges])


def _bytes(ranges: list[tuple[int, int]] | None) -> int:
    return sum(end - start for start, end in ranges or ())


@contextlib.contextmanager
def merge_sources(chain: Chain, merge_from: typing.Sequence[dict], policy: ChainPolicy | None,
                  force_share: bool) -> typing.Iterator[list[MergeSource]]:
    """MergeSource objects for merge_from ([{name, path, backing_chain}]): a bitmap of the target image itself (no
    path), of an image of its chain, or of any other image (opened read-only here); with backing_chain, the bitmap
    across the layers of the target's backing chain (or of path's chain) that hold it."""
    with contextlib.ExitStack() as stack:
        sources: list[MergeSource] = []
        for item in merge_from:
            name, path = item.get("name"), item.get("path")
            if not name:
                raise InvalidArgumentError("Every bitmap to merge needs a name")
            if item.get("backing_chain"):
                if path and not same_file(path, chain.top.path):
                    source_chain = stack.enter_context(open_chain(path, force_share=force_share, policy=policy))
                else:
                    source_chain = Chain(chain.images[1:]) if len(chain.images) > 1 else None
                if source_chain is None:
                    raise InvalidArgumentError("%s has no backing file to merge bitmap '%s' from"
                                               % (chain.top.path, name), chain.top.path)
                sources.append(MergeSource(name, chain=source_chain))
                continue
            img = next((member for member in chain.images if not path or same_file(member.path, path)), None)
            if img is None:
                img = stack.enter_context(open_chain(path, force_share=force_share, policy=policy, backing=False)).top
            sources.append(MergeSource(name, img=img))
        yield sources

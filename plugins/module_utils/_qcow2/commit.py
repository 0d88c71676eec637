# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Commit: write what the layers from ``top`` down to just above ``base`` hold into ``base``.

Order, so that the chain reads the same from its top at every instant:
1. grow base if top is larger; copy the layers' data and zero ranges into base; flush. Base changes
   only under ranges those layers cover, so nothing above it sees a difference.
2. re-point the image above top (or, when top is the active image, top itself) to base.
3. when top is the active image, empty it (one atomic metadata switch): it now reads through to base,
   which holds its data.
4. optionally delete the layers that left the chain.
Interrupted anywhere, the chain reads the same, and running the commit again finishes it.
"""

from __future__ import annotations

import collections
import os
import time
import typing

from .backing_name import name_for, set_backing
from .bitmaps import recorded_writes
from .chain import open_chain
from .copied import copied_pieces
from .copyview import CopyStats, copy_runs
from .errors import ImageLockedError, InvalidArgumentError, Qcow2Error
from .fileio import copies_wanted, note_copies
from .info import chain_info
from .locking import holders_conflict
from .metadata_commit import PlannedState, apply_state
from .paths import position_of, same_file
from .records import CommitPlan, CommitResult, chain_entry
from .segments import RUN_BELOW, RUN_DATA, RUN_ZERO, data_bytes, decides_any, layer_runs
from .space import require_space

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import Chain, ChainPolicy, Image
    from .copyview import Progress
    from .image import Qcow2Image
    from .records import ChainEntry
    from .segments import Run


def plan_commit(path: str, top: str | None = None, base: str | None = None, remove_committed: bool = False,
                policy: ChainPolicy | None = None, measure: bool = True) -> CommitPlan:
    """What commit would do, without writing. Raises what the real run would raise before writing: a lock a
    running qemu holds (ImageLockedError) and too little free space in base (NoSpaceError) included.

    ``measure=False``, for a plan that commit(plan=...) carries out right after: the layers' data is not walked
    (bytes_copied is None) and free space is not checked here, since the commit walks the layers and checks the
    space itself under its locks; whether anything is to be committed is still decided, as the measured plan
    decides it."""
    with open_chain(path, force_share=True, policy=policy) as chain:
        plan = _plan(chain, path, top, base, remove_committed, policy, measure)
        if plan.changed:
            _refuse_held(chain, plan)
            if measure:
                require_space(plan.base, plan.bytes_copied, "commit into %s" % plan.base)
        return plan


def _left_chain(top: str, chain: Chain, policy: ChainPolicy | None) -> bool:
    """True if top's own backing chain reaches an image of chain: a layer an earlier commit took out of it."""
    try:
        with open_chain(top, force_share=True, policy=policy) as own:
            return any(same_file(img.path, member.path) for img in own.images[1:] for member in chain.images)
    except Qcow2Error:
        return False


def _written(plan: CommitPlan) -> list[str]:
    """The images the commit writes: base, and the image re-pointed to it (or top when top is path)."""
    ti = plan.top_depth
    return [plan.base, plan.chain[ti - 1 if ti > 0 else 0]["filename"]]


def _refuse_held(chain: Chain, plan: CommitPlan) -> None:
    """The locks the real run will take must be free (a running qemu holding an image makes it fail)."""
    writes = _written(plan)
    for img in chain.images:
        conflict = holders_conflict(img.path, any(same_file(img.path, w) for w in writes))
        if conflict:
            raise ImageLockedError(conflict, img.path)


class _Located(collections.namedtuple("_Located", (
    "top_depth",  # Optional[int]
    "base_depth",  # Optional[int]
    "runs",  # list; segments.layer_runs of top above base
    "msg",  # Optional[str]; why there is nothing to commit
))):
    __slots__ = ()


def _plan(chain: Chain, path: str, top: str | None, base: str | None, remove_committed: bool = False,
          policy: ChainPolicy | None = None, measure: bool = True) -> CommitPlan:
    infos = chain_info(chain)
    found = _locate(chain, path, top, base, policy, with_runs=measure)
    ti, bi = found.top_depth, found.base_depth
    if found.msg is not None:
        top_path = chain.images[ti].path if ti is not None else top or path
        base_path = chain.images[bi].path if bi is not None else base
        return CommitPlan(False, top_path, base_path, [], [], 0, found.msg, ti, bi, None, infos,
                          [chain_entry(info) for info in infos])
    top_img, base_img = chain.images[ti], chain.images[bi]
    committed = _committed(chain, ti, bi)
    base_size = max(base_img.size, top_img.size)
    entries = [chain_entry(info) for info in infos]
    return CommitPlan(True, top_img.path, base_img.path, committed, list(committed) if remove_committed else [],
                      data_bytes(found.runs) if measure else None, None, ti, bi, base_size, infos,
                      _chain_after(entries, ti, bi, base_size))


def _committed(chain: Chain, ti: int, bi: int) -> list[str]:
    """The images that leave the chain: top (unless it is the active image) down to just above base."""
    return [img.path for img in chain.images[ti:bi] if ti > 0 or img is not chain.images[0]]


def _locate(chain: Chain, path: str, top: str | None, base: str | None, policy: ChainPolicy | None = None,
            with_runs: bool = True) -> _Located:
    """Where top and base are in the chain, and the runs to copy (only with_runs); or why there is nothing to
    commit."""
    top = top or path
    ti = position_of(chain.paths, top)
    if ti is None:
        if os.path.exists(top):
            if not _left_chain(top, chain, policy):
                raise InvalidArgumentError("%s is not in the backing chain of %s (and never was: its own backing chain "
                                           "does not meet it)" % (top, path), path)
            return _Located(None, None, [], "%s is not in the backing chain of %s: nothing to commit" % (top, path))
        return _Located(None, None, [], "%s does not exist and is not in the chain of %s: nothing to commit" % (top, path))
    top_img = chain.images[ti]
    if top_img.backing is None:
        raise InvalidArgumentError("Image %s has no backing file to commit into" % top_img.path, top_img.path)
    if base is None:
        bi = ti + 1
    else:
        bi = position_of(chain.paths, base)
        if bi is None:
            raise InvalidArgumentError("Did not find '%s' in the backing chain of '%s'" % (base, top_img.path), top_img.path)
        if bi <= ti:
            raise InvalidArgumentError("Base %s is not below top %s in the chain of %s" % (base, top, path), path)
    base_img = chain.images[bi]
    runs = layer_runs(top_img, base_img, 0, top_img.size) if with_runs else []
    if ti == 0 and bi == 1 and top_img.size <= base_img.size:
        # with base right below top, the runs say whether top decides anything by itself (data or zero clusters)
        holds_data = any(kind in (RUN_DATA, RUN_ZERO) for _start, _end, kind in runs) if with_runs else decides_any(top_img)
        if not holds_data:
            return _Located(ti, bi, runs, "%s holds no data above %s: nothing to commit" % (top_img.path, base_img.path))
    return _Located(ti, bi, runs, None)


def _chain_after(entries: list[ChainEntry], ti: int, bi: int, base_size: int) -> list[ChainEntry]:
    """The chain once top..base-1 are committed: those layers leave (top stays when it is the active image),
    and the image above them (or top) is pointed at base with a name spelled like the one it replaces."""
    base = entries[bi]._replace(virtual_size=base_size)

    def pointed_at_base(entry: ChainEntry) -> ChainEntry:
        return entry._replace(backing_filename=name_for(entry.filename, base.filename, entry.backing_filename),
                              backing_format=base.format)

    if ti == 0:
        top = pointed_at_base(entries[0]) if bi > 1 else entries[0]
        return [top, base] + entries[bi + 1:]
    return entries[:ti - 1] + [pointed_at_base(entries[ti - 1]), base] + entries[bi + 1:]


def commit(path: str, top: str | None = None, base: str | None = None, remove_committed: bool = False,
           policy: ChainPolicy | None = None, progress: Progress | None = None, plan: CommitPlan | None = None,
           empty_top: bool = True) -> CommitResult:
    """Commit top (default: path) into base (default: top's backing file) in path's chain.

    ``plan``, from plan_commit with the same arguments just before, spares reading the chain a second time to
    find what to open writable; the chain is planned again once open, and opened anew if it changed meanwhile.
    ``empty_top=False`` skips step 3 (qemu-img commit -d): top, when it is the active image, keeps its data, which
    base now holds too, so the chain still reads the same; for a caller that deletes top next.
    """
    started = time.time()
    if plan is None:
        with open_chain(path, force_share=True, policy=policy) as chain:
            # where top and base are, to know what to open writable; the runs are found once that is done
            found = _locate(chain, path, top, base, policy, with_runs=False)
            if found.msg is not None:
                top_path = chain.images[found.top_depth].path if found.top_depth is not None else top or path
                base_path = chain.images[found.base_depth].path if found.base_depth is not None else base
                return CommitResult(False, top_path, base_path, [], [], 0, found.msg, time.time() - started)
            layout = [img.path for img in chain.images]
    elif not plan.changed:
        return CommitResult(False, plan.top, plan.base, [], [], 0, plan.msg, time.time() - started)
    else:
        found = plan
        layout = [info["filename"] for info in plan.chain]
    ti, bi = found.top_depth, found.base_depth
    above = layout[ti - 1] if ti > 0 else None
    with open_chain(path, writable=above is None or same_file(path, above), policy=policy,
                    writable_backing=[layout[bi]] + ([above] if above else [])) as chain:
        again = _locate(chain, path, top, base, policy)
        if plan is not None and (again.msg, again.top_depth, again.base_depth) != (None, ti, bi):
            chain.close()
            return commit(path, top, base, remove_committed, policy, progress, empty_top=empty_top)  # the chain changed
        committed = _committed(chain, again.top_depth, again.base_depth)
        result = CommitResult(True, chain.images[again.top_depth].path, chain.images[again.base_depth].path, committed,
                              [], _commit_in(chain, again, progress, empty_top), None, 0.0)
    removed = []
    if remove_committed:
        for name in committed:
            os.unlink(name)
            removed.append(name)
    return result._replace(removed=removed, duration=time.time() - started)


def _commit_in(chain: Chain, found: _Located, progress: Progress | None, empty_top: bool = True) -> int:
    """Steps 1 to 3 (see the module docstring) in a chain opened with base and the re-pointed image writable."""
    ti, bi, runs = found.top_depth, found.base_depth, found.runs
    top_img = chain.images[ti]
    base_img = chain.images[bi]
    require_space(base_img.path, data_bytes(runs), "commit into %s" % base_img.path)
    if top_img.size > base_img.size:
        _grow(base_img, top_img.size)
    with recorded_writes(base_img, _committed_granules(base_img, runs)):
        stats = copy_runs(top_img, base_img, runs, zero_runs="zero", stats=CopyStats(), progress=progress)
    if bi == ti + 1 and copies_wanted(base_img.file):  # a write record takes digests from top's blocks
        note_copies(base_img.file, top_img.file, copied_pieces(top_img, base_img))
    base_img.flush()  # durable before anything stops masking these ranges
    repoint = chain.images[ti - 1] if ti > 0 else (top_img if bi > ti + 1 else None)
    if ti > 0:
        _mask_past_top(repoint, top_img, base_img)
    if repoint is not None:
        set_backing(repoint, name_for(repoint.path, base_img.path, repoint.backing_filename), base_img.format_name)
    if ti == 0 and empty_top:
        _make_empty(top_img)
    return stats.bytes_written + stats.bytes_zeroed


def _committed_granules(base_img: Image, runs: list[Run]) -> list[tuple[int, int]]:
    """What qemu-img commit writes into base, and so dirties in base's enabled bitmaps: every range the layers above
    base hold, rounded out to the granularity of its copy job (mirror's default: base's cluster size, at least 4 KiB,
    at most 64 KiB). What top's own bitmaps say stays true: emptying top changes no guest data."""
    if base_img.format_name != "qcow2" or base_img.bitmaps is None:  # no enabled bitmap to record into
        return []
    from .bitmap_ops import default_granularity
    granule = default_granularity(base_img)
    return [(start // granule * granule, -(-end // granule) * granule)
            for start, end, kind in runs if kind in (RUN_DATA, RUN_ZERO)]


def _mask_past_top(above: Qcow2Image, top_img: Image, base_img: Image) -> None:
    """Past top's end the image above read zeros; base may hold data there. Write zeros into the image above
    where it holds nothing, before it is pointed at base (until then it reads zeros there either way)."""
    lo, hi = top_img.size, min(above.size, base_img.size)
    if hi <= lo:
        return
    gaps = [(start, end) for start, end, kind in layer_runs(above, top_img, lo, hi - lo) if kind == RUN_BELOW]
    if not gaps:
        return
    above.backing = base_img  # the writer judges what a zero write must mask by what lies below: base, from now on
    try:
        for start, end in gaps:
            above.write_zeroes(start, end - start)
    finally:
        above.backing = top_img
    above.flush()


def _grow(img: Image, size: int) -> None:
    if img.format_name == "raw":
        img.resize(size)
    else:
        from .resize import grow
        grow(img, -(-size // 512) * 512)


def _make_empty(img: Qcow2Image) -> None:
    """Drop every cluster of the active state (snapshots keep theirs), atomically."""
    apply_state(img, PlannedState(img.size, bytes(8 * len(img.l1)), [s.copy() for s in img.snapshot_list()]))

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

import os
import time

from .backing_name import name_for, same_file, set_backing
from .bitmaps import recorded_writes
from .chain import open_chain
from .copyview import CopyStats, copy_runs
from .errors import ImageLockedError, InvalidArgumentError, Qcow2Error
from .locking import holders_conflict
from .metadata_commit import PlannedState, apply_state
from .segments import RUN_BELOW, RUN_DATA, RUN_ZERO, data_bytes, layer_runs
from .space import require_space


def _index_of(chain, path):
    for i, img in enumerate(chain.images):
        if same_file(img.path, path):
            return i
    return None


def plan(path, top=None, base=None, policy=None):
    """What commit would do, without writing: a dict (see commit())."""
    with open_chain(path, force_share=True, policy=policy) as chain:
        result = _plan(chain, path, top, base, policy)
        if result["changed"]:
            _refuse_held(chain, result)
        return result


def _left_chain(top, chain, policy):
    """True if top's own backing chain reaches an image of chain: a layer an earlier commit took out of it."""
    try:
        with open_chain(top, force_share=True, policy=policy) as own:
            return any(same_file(img.path, member.path) for img in own.images[1:] for member in chain.images)
    except Qcow2Error:
        return False


def _refuse_held(chain, result):
    """Check mode: the locks the real run will take must be free (a running qemu holding an image makes it fail)."""
    ti = _index_of(chain, result["top"])
    writes = [result["base"], chain.images[ti - 1].path if ti > 0 else chain.images[0].path]
    for img in chain.images:
        conflict = holders_conflict(img.path, any(same_file(img.path, w) for w in writes))
        if conflict:
            raise ImageLockedError(conflict, img.path)


def _plan(chain, path, top, base, policy=None):
    top = top or path
    ti = _index_of(chain, top)
    result = {"changed": False, "top": top, "base": base, "committed": [], "removed": [], "bytes_copied": 0,
              "duration": 0.0}
    if ti is None:
        if os.path.exists(top):
            if not _left_chain(top, chain, policy):
                raise InvalidArgumentError("%s is not in the backing chain of %s (and never was: its own backing chain "
                                           "does not meet it)" % (top, path), path)
            result["msg"] = "%s is not in the backing chain of %s: nothing to commit" % (top, path)
        else:
            result["msg"] = "%s does not exist and is not in the chain of %s: nothing to commit" % (top, path)
        return result
    top_img = chain.images[ti]
    if top_img.backing is None:
        raise InvalidArgumentError("Image %s has no backing file to commit into" % top_img.path, top_img.path)
    if base is None:
        bi = ti + 1
    else:
        bi = _index_of(chain, base)
        if bi is None:
            raise InvalidArgumentError("Did not find '%s' in the backing chain of '%s'" % (base, top_img.path), top_img.path)
        if bi <= ti:
            raise InvalidArgumentError("Base %s is not below top %s in the chain of %s" % (base, top, path), path)
    base_img = chain.images[bi]
    result["base"] = base_img.path
    result["top"] = top_img.path
    result["active"] = ti == 0
    result["committed"] = [img.path for img in chain.images[ti:bi] if not (ti == 0 and img is top_img)]
    runs = layer_runs(top_img, base_img, 0, top_img.size)
    result["bytes_copied"] = data_bytes(runs)
    result["base_size"] = max(base_img.size, top_img.size)
    # with base right below top, the runs say whether top decides anything by itself (data or zero clusters)
    holds_data = any(kind in (RUN_DATA, RUN_ZERO) for _start, _end, kind in runs)
    if ti == 0 and bi == 1 and not holds_data and top_img.size <= base_img.size:
        result["msg"] = "%s holds no data above %s: nothing to commit" % (top_img.path, base_img.path)
        return result
    result["changed"] = True
    return result


def commit(path, top=None, base=None, remove_committed=False, policy=None, dry_run=False, progress=None):
    """Commit top (default: path) into base (default: top's backing file) in path's chain."""
    started = time.time()
    with open_chain(path, force_share=True, policy=policy) as chain:
        result = _plan(chain, path, top, base, policy)
        if dry_run and result["changed"]:
            _refuse_held(chain, result)
        if not result["changed"] or dry_run:
            if dry_run and remove_committed:
                result["removed"] = list(result["committed"])
            return result
        ti = _index_of(chain, result["top"])
        bi = _index_of(chain, result["base"])
        above = chain.images[ti - 1].path if ti > 0 else None
        writable = [result["base"]] + ([above] if above else [])
    with open_chain(path, writable=ti == 0 or same_file(path, above or ""), policy=policy,
                    writable_backing=writable) as chain:
        top_img = chain.images[ti]
        base_img = chain.images[bi]
        runs = layer_runs(top_img, base_img, 0, top_img.size)
        require_space(base_img.path, data_bytes(runs), "commit into %s" % base_img.path)
        if top_img.size > base_img.size:
            _grow(base_img, top_img.size)
        with recorded_writes(base_img, _committed_granules(base_img, runs)):
            stats = copy_runs(top_img, base_img, runs, zero_runs="zero", stats=CopyStats(), progress=progress)
        base_img.flush()  # durable before anything stops masking these ranges
        repoint = chain.images[ti - 1] if ti > 0 else (top_img if bi > ti + 1 else None)
        if ti > 0:
            _mask_past_top(repoint, top_img, base_img)
        if repoint is not None:
            set_backing(repoint, name_for(repoint.path, base_img.path, repoint.backing_filename), base_img.format_name)
        if ti == 0:
            _make_empty(top_img)
    removed = []
    if remove_committed:
        for committed in result["committed"]:
            os.unlink(committed)
            removed.append(committed)
    result.update(removed=removed, bytes_copied=stats.bytes_written + stats.bytes_zeroed, duration=time.time() - started)
    return result


def _committed_granules(base_img, runs):
    """What qemu-img commit writes into base, and so dirties in base's enabled bitmaps: every range the layers above
    base hold, rounded out to the granularity of its copy job (mirror's default: base's cluster size, at least 4 KiB,
    at most 64 KiB). What top's own bitmaps say stays true: emptying top changes no guest data."""
    if base_img.format_name != "qcow2":
        return []
    from .bitmap_ops import default_granularity
    granule = default_granularity(base_img)
    return [(start // granule * granule, -(-end // granule) * granule)
            for start, end, kind in runs if kind in (RUN_DATA, RUN_ZERO)]


def _mask_past_top(above, top_img, base_img):
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


def _grow(img, size):
    if img.format_name == "raw":
        img.resize(size)
    else:
        from .resize import grow
        grow(img, -(-size // 512) * 512)


def _make_empty(img):
    """Drop every cluster of the active state (snapshots keep theirs), atomically."""
    apply_state(img, PlannedState(img.size, bytes(8 * len(img.l1)), [s.copy() for s in img.snapshot_list()]))

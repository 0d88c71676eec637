# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The engine's entry points for modules: path in, plain data out, every image closed on return.

Every function raises only Qcow2Error subclasses (errors.py) for problems a user can cause; a module
turns them into fail_json(msg=str(err)). MissingDependencyError carries ``library`` for
missing_required_lib().
"""

from __future__ import annotations

from .chain import ChainPolicy, open_chain
from .create import CreateOptions
from .errors import BitmapUnusableError, ImageLockedError, InvalidArgumentError, Qcow2Error
from .layout import COMPRESSED, NORMAL, ZERO_ALLOC, classify, nonzero_entries

# Operations are imported where they are used: a module needs one of them, and start-up time counts
# (qcow2_info on a 1000-deep chain is benchmarked against qemu-img info).

__all__ = [
    "ChainPolicy", "CreateOptions", "create_image", "image_info", "check", "list_snapshots", "create_snapshot",
    "revert_snapshot", "delete_snapshot", "grow_image", "allocated_bytes", "open_chain", "commit", "rebase",
    "convert", "measure", "list_bitmaps", "plan_bitmap", "bitmap", "change_bitmap", "dirty_ranges", "copy_ranges",
    "BitmapUnusableError", "Qcow2Error",
]


def create_image(path, options, policy=None, overwrite=False):
    """Create a qcow2 image (CreateOptions); returns its virtual size."""
    from .create import create
    return create(path, options, policy=policy, overwrite=overwrite)


def image_info(path, backing_chain=True, force_share=False, policy=None, bitmaps=False):
    """qemu-img info [--backing-chain] --output=json as a list of dicts, top first; with bitmaps, each qcow2 image's
    dict also has "bitmaps" (list_bitmaps' entries)."""
    from .info import chain_info
    with open_chain(path, force_share=force_share, policy=policy, backing=backing_chain) as chain:
        return chain_info(chain, bitmaps=bitmaps)


def check(path, repair=None, force_share=False, policy=None):
    """qemu-img check [-r leaks|all]: {'result': qemu's json keys, 'exit_code': n, 'messages': [...]}.

    Like qemu-img, it opens the backing chain too (in check mode), so an image whose backing file cannot be opened
    cannot be checked either."""
    from .check import check_image, exit_code, report_as_qemu_json
    with open_chain(path, fmt="qcow2", writable=bool(repair), force_share=force_share and not repair, policy=policy,
                    check_mode=True) as chain:
        report = check_image(chain.top, repair=repair)
        return {"result": report_as_qemu_json(report, path), "exit_code": exit_code(report), "messages": report.messages}


def list_snapshots(path, force_share=False):
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", force_share=force_share, backing=False) as chain:
        return [_snapshots.snapshot_info(sn) for sn in chain.top.snapshot_list()]


def create_snapshot(path, name):
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        return _snapshots.snapshot_info(_snapshots.create_snapshot(chain.top, name))


def revert_snapshot(path, name, dry_run=False):
    """qemu-img snapshot -a; with dry_run, read without locks and raise only what the revert would refuse (a bad
    snapshot, persistent bitmaps)."""
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", writable=not dry_run, force_share=dry_run, backing=not dry_run) as chain:
        _snapshots.revert_snapshot(chain.top, name, dry_run)


def delete_snapshot(path, name):
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        _snapshots.delete_snapshot(chain.top, name)


def grow_image(path, size):
    """Grow the virtual size; False if it already has that size; refuses to shrink."""
    from .resize import grow
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        return grow(chain.top, size)


def allocated_bytes(img):
    """Guest bytes the image itself holds (data, compressed or preallocated zero clusters) in its active L1."""
    if img.format_name != "qcow2":
        return img.size
    geo = img.geo
    total = 0
    for l1_index, _entry in nonzero_entries(img.l1):
        table = img.l2_table_offset(l1_index)
        if not table:
            continue
        for s in range(geo.slices_per_table):
            entries = img.l2_slice(table, s)
            for i in range(0, len(entries), geo.l2_entry_words):
                entry = entries[i]
                if not entry:
                    continue
                kind = classify(entry, geo.extended_l2)
                if kind in (NORMAL, COMPRESSED, ZERO_ALLOC):
                    total += geo.cluster_size
    return total


def commit(path, top=None, base=None, remove_committed=False, policy=None, dry_run=False, progress=None):
    """Commit top (default path) into base (default: top's backing file); see commit.py for the order of steps.

    Returns changed, top, base, committed (paths that left the chain), removed, bytes_copied, duration, msg.
    """
    from . import commit as _commit
    return _commit.commit(path, top=top, base=base, remove_committed=remove_committed, policy=policy,
                          dry_run=dry_run, progress=progress)


def rebase(path, backing_file, backing_format=None, unsafe=False, policy=None, dry_run=False):
    """Change path's backing file ("" = none); returns changed, old/new backing and format, header_only, bytes_copied."""
    from . import rebase as _rebase
    return _rebase.rebase(path, backing_file, backing_format=backing_format, unsafe=unsafe, policy=policy,
                          dry_run=dry_run)


def convert(source, dest, compress=False, backing_file=None, backing_format=None, options=None, policy=None,
            dry_run=False, source_format=None, progress=None):
    """Write dest as a new qcow2 image holding source's guest view (standalone, or above backing_file)."""
    from . import convert as _convert
    return _convert.convert(source, dest, compress=compress, backing_file=backing_file, backing_format=backing_format,
                            options=options, policy=policy, dry_run=dry_run, source_format=source_format,
                            progress=progress)


def measure(source=None, size=None, options=None, source_format=None, backing_file=None, policy=None):
    """qemu-img measure -O qcow2: {'required', 'fully-allocated'[, 'bitmaps']}."""
    from . import measure as _measure
    if source is None:
        if size is None:
            raise InvalidArgumentError("measure needs a source image or a size")
        return _measure.measure_size(size, options)
    with open_chain(source, fmt=source_format, policy=policy) as chain:
        stop = None
        if backing_file:
            from .backing_name import same_file
            stop = next((img for img in chain.images[1:] if same_file(img.path, backing_file)), chain.top.backing)
        return _measure.measure_chain(chain.top, stop, options)


def plan_commit(path, top=None, base=None, policy=None):
    """What commit would do (same keys as commit's result), without writing."""
    from . import commit as _commit
    return _commit.plan(path, top=top, base=base, policy=policy)


# ---- persistent dirty bitmaps ----
def list_bitmaps(path, backing_chain=False, force_share=True, policy=None):
    """Every bitmap of the image (and, with backing_chain, of every image below it), top first:
    [{"filename", "bitmaps": [{name, granularity, flags, in_use, enabled, trusted, reason}]}]."""
    from .bitmap_ops import describe
    with open_chain(path, force_share=force_share, policy=policy, backing=backing_chain) as chain:
        return [{"filename": img.path, "bitmaps": describe(img) if img.format_name == "qcow2" else []}
                for img in chain.images]


def plan_bitmap(path, name, state="present", granularity=None, enabled=None, merge_from=(), policy=None):
    """What bitmap() will do (a BitmapPlan), read without locks; raises what the run would refuse, the lock a
    running VM holds on the image included."""
    from .bitmap_records import BitmapPlan
    from .bitmap_state import merge_sources, plan
    from .locking import holders_conflict
    with open_chain(path, fmt="qcow2", force_share=True, policy=policy, backing=_needs_chain(merge_from)) as chain:
        with merge_sources(chain, merge_from, policy, force_share=True) as sources:
            actions, before, after = plan(chain.top, name, state, granularity, enabled, sources)
    if actions:
        conflict = holders_conflict(path, True)
        if conflict:
            raise ImageLockedError(conflict, path)
    return BitmapPlan(bool(actions), [_action_name(a) for a in actions], before, after)


def bitmap(path, name, state="present", granularity=None, enabled=None, merge_from=(), policy=None):
    """Bring bitmap name of path to a state: present (added if missing), cleared (present and empty) or absent;
    enabled or disabled; with the bits of the bitmaps in merge_from ([{name, path, backing_chain}]) merged in.
    Returns a BitmapResult."""
    from .bitmap_records import BitmapResult
    from .bitmap_state import merge_sources, plan, run
    with open_chain(path, fmt="qcow2", writable=True, policy=policy, backing=_needs_chain(merge_from)) as chain:
        with merge_sources(chain, merge_from, policy, force_share=False) as sources:
            actions, before, after = plan(chain.top, name, state, granularity, enabled, sources)
            if actions:
                after = run(chain.top, name, actions)
    return BitmapResult(bool(actions), [_action_name(a) for a in actions], before, after)


def _needs_chain(merge_from):
    return any(item.get("backing_chain") and not item.get("path") for item in merge_from)


def _action_name(action):
    verb, argument = action
    return argument.describe() if verb == "merge" else verb


def change_bitmap(path, action, name, granularity=None, enabled=True, source=None, source_file=None,
                  source_format=None, policy=None):
    """qemu-img bitmap --add/--remove/--clear/--enable/--disable/--merge SOURCE [-b SOURCE_FILE [-F FMT]] on one
    bitmap, with qemu's checks and messages; True if it changed anything."""
    from . import bitmap_ops as ops
    with open_chain(path, fmt="qcow2", writable=True, policy=policy, backing=False) as chain:
        img = chain.top
        if action == "add":
            return ops.add(img, name, granularity, enabled)
        if action == "remove":
            return ops.remove(img, name)
        if action == "clear":
            return ops.clear(img, name)
        if action in ("enable", "disable"):
            return ops.set_enabled(img, name, action == "enable")
        if action != "merge":
            raise InvalidArgumentError("Unknown bitmap operation %r" % (action,))
        if not source_file:
            return ops.merge(img, name, img, source)
        with open_chain(source_file, fmt=source_format, policy=policy, backing=False) as other:
            return ops.merge(img, name, other.top, source)


def dirty_ranges(path, name, backing_chain=False, force_share=False, allow_disabled=False, policy=None):
    """The guest ranges bitmap name marks dirty (a DirtyRanges), merged across the layers of the chain that hold it
    with backing_chain. BitmapUnusableError (with its reason) unless every bitmap read is consistent and, unless
    allow_disabled, enabled: only then is it a record of every change since it was created."""
    from . import bitmap_ops as ops
    from .bitmap_records import DirtyRanges
    with open_chain(path, force_share=force_share, policy=policy, backing=backing_chain) as chain:
        ranges, layers = ops.chain_ranges(chain, name, need_enabled=not allow_disabled)
        granularity = ops.find(chain.top, name).granularity
        return DirtyRanges(name, [(start, end - start) for start, end in ranges],
                           sum(end - start for start, end in ranges), chain.top.size, granularity,
                           [img.path for img in layers])


def copy_ranges(source, dest, ranges, backing_file=None, backing_format=None, source_format=None, options=None,
                force_share=False, policy=None, dry_run=False, progress=None):
    """Write dest, a new qcow2 layer over backing_file (None: standalone) holding source's guest view in ranges
    [(offset, length)] and zero clusters where they read zeros (copyranges.py); a CopyRangesResult."""
    from .copyranges import copy_ranges as _copy
    return _copy(source, dest, ranges, backing_file=backing_file, backing_format=backing_format,
                 source_format=source_format, options=options, force_share=force_share, policy=policy,
                 dry_run=dry_run, progress=progress)

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The engine's one door: everything outside the engine imports it through this file, and only this file.

Paths in, plain data and typed records out, every image closed on return. Every function raises only
Qcow2Error subclasses (re-exported here) for problems a user can cause; a module turns them into
fail_json(msg=str(err)). MissingDependencyError carries ``library`` for missing_required_lib().

An operation that changes images has a plan_* function (reads only; returns what will change, the chain
after it, and raises what the real run would refuse, locks and free space included) and the operation
itself, which takes that plan to spare reading the chain again.
"""

from __future__ import annotations

import typing

from .chain import ChainPolicy, check_backing_reference, detect_format, open_chain, resolve_backing_path
from .create import CreateOptions
from .deps import require_construct
from .errors import (
    BackingChainError,
    BitmapUnusableError,
    CorruptionError,
    FormatError,
    ImageLockedError,
    InvalidArgumentError,
    MissingDependencyError,
    NoSpaceError,
    NotQcow2Error,
    Qcow2Error,
    ReadOnlyError,
    UnsafeBackingError,
    UnsupportedError,
)
from .fileio import WriteRecord, recording_new_image, recording_writes
from .image import probe_is_qcow2 as is_qcow2
from .locking import held as locked, refuse_if_held as refuse_if_locked
from .paths import file_identity, position_of, remove_stale_temporaries, same_file
from .records import (
    BitmapPlan,
    BitmapResult,
    ChainEntry,
    CommitPlan,
    CommitResult,
    ConvertPlan,
    ConvertResult,
    CopyRangesResult,
    DirtyRanges,
    RebasePlan,
    RebaseResult,
    chain_entry,
)
from .space import require_space

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .copyview import Progress


# The operations' own modules are imported where they are used: a module run needs one of them, and start-up
# time counts (qcow2_info on a 1000-deep chain is benchmarked against qemu-img info).

__all__ = [
    # options, records and errors
    "ChainPolicy", "CreateOptions", "ChainEntry", "CommitPlan", "CommitResult", "RebasePlan", "RebaseResult",
    "ConvertPlan", "ConvertResult", "BitmapPlan", "BitmapResult", "DirtyRanges", "CopyRangesResult", "Qcow2Error",
    "FormatError", "NotQcow2Error", "UnsupportedError", "ImageLockedError", "ReadOnlyError", "BackingChainError",
    "UnsafeBackingError", "NoSpaceError", "InvalidArgumentError", "CorruptionError", "MissingDependencyError",
    "BitmapUnusableError",
    # files, names and locks
    "same_file", "file_identity", "position_of", "resolve_backing_path", "check_backing_reference", "detect_format",
    "is_qcow2", "require_qcow2", "refuse_if_locked", "locked", "require_space", "remove_stale_temporaries",
    "require_construct", "recording_writes", "recording_new_image", "WriteRecord",
    # reading
    "image_info", "chain_entry", "check", "measure", "list_snapshots", "snapshot_matches", "list_bitmaps",
    "dirty_ranges", "read_view", "differing_ranges",
    # changing
    "create_image", "grow_image", "set_lazy_refcounts", "create_snapshot", "revert_snapshot", "delete_snapshot",
    "plan_commit", "commit", "plan_rebase", "rebase", "plan_convert", "convert", "plan_bitmap", "bitmap",
    "change_bitmap", "copy_ranges", "export_raw",
]


def require_qcow2(path: str) -> None:
    """NotQcow2Error unless path is a qcow2 image (a missing file gets the engine's 'No such file' error)."""
    if not is_qcow2(path):
        raise NotQcow2Error("%s is not a qcow2 image" % path, path)


def create_image(path: str, options: CreateOptions, policy: ChainPolicy | None = None, overwrite: bool = False) -> int:
    """Create a qcow2 image (CreateOptions); returns its virtual size."""
    from .create import create
    return create(path, options, policy=policy, overwrite=overwrite)


def image_info(path: str, backing_chain: bool = True, force_share: bool = False, policy: ChainPolicy | None = None,
               bitmaps: bool = False) -> list[dict]:
    """qemu-img info [--backing-chain] --output=json as a list of dicts, top first; with bitmaps, each qcow2 image's
    dict also has "bitmaps" (list_bitmaps' entries)."""
    from .info import chain_info
    with open_chain(path, force_share=force_share, policy=policy, backing=backing_chain) as chain:
        return chain_info(chain, bitmaps=bitmaps)


def check(path: str, repair: str | None = None, force_share: bool = False, policy: ChainPolicy | None = None) -> dict:
    """qemu-img check [-r leaks|all]: {'result': qemu's json keys, 'exit_code': n, 'messages': [...]}.

    Like qemu-img, it opens the backing chain too (in check mode), so an image whose backing file cannot be opened
    cannot be checked either."""
    from .check import check_image, exit_code, report_as_qemu_json
    with open_chain(path, fmt="qcow2", writable=bool(repair), force_share=force_share and not repair, policy=policy,
                    check_mode=True) as chain:
        report = check_image(chain.top, repair=repair)
        return {"result": report_as_qemu_json(report, path), "exit_code": exit_code(report), "messages": report.messages}


def read_view(path: str, force_share: bool = False, policy: ChainPolicy | None = None) -> int:
    """Read every data byte of path's guest view end to end (proof that it can be read); the bytes read."""
    from .compare import read_view as _read
    return _read(path, force_share=force_share, policy=policy)


def differing_ranges(first: str, second: str, force_share: bool = False,
                     policy: ChainPolicy | None = None) -> list[tuple[int, int]]:
    """Where the guest views of two images differ, as [(offset, length)] of 512-byte sectors (qemu-img compare
    without -s: past the shorter view's end the longer must read zeros); empty when they are identical."""
    from .compare import differing_ranges as _differ
    return _differ(first, second, force_share=force_share, policy=policy)


def list_snapshots(path: str, force_share: bool = False) -> list[dict]:
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", force_share=force_share, backing=False) as chain:
        return [_snapshots.snapshot_info(sn) for sn in chain.top.snapshot_list()]


def snapshot_matches(path: str, snapshot_id: str) -> tuple[bool, int]:
    """(matches, disk_size): whether reverting to the snapshot with id ``snapshot_id`` would change nothing (the
    active state maps every guest cluster as it does, and has its size); disk_size is the snapshot's virtual size.
    Read without locks, like qemu-img info -U."""
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", backing=False, force_share=True) as chain:
        return _snapshots.matches_snapshot(chain.top, snapshot_id)


def create_snapshot(path: str, name: str) -> dict:
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        return _snapshots.snapshot_info(_snapshots.create_snapshot(chain.top, name))


def revert_snapshot(path: str, name: str, dry_run: bool = False) -> None:
    """qemu-img snapshot -a; with dry_run, read without locks and raise only what the revert would refuse (a bad
    snapshot, persistent bitmaps)."""
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", writable=not dry_run, force_share=dry_run, backing=not dry_run) as chain:
        _snapshots.revert_snapshot(chain.top, name, dry_run)


def delete_snapshot(path: str, name: str) -> None:
    from . import snapshots as _snapshots
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        _snapshots.delete_snapshot(chain.top, name)


def grow_image(path: str, size: int) -> bool:
    """Grow the virtual size; False if it already has that size; refuses to shrink."""
    from .resize import grow
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        return grow(chain.top, size)


def set_lazy_refcounts(path: str, enabled: bool) -> None:
    """Set or clear lazy_refcounts in place (qemu-img amend -o lazy_refcounts=on|off); needs compat 1.1."""
    from .amend import set_lazy_refcounts as _set
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        _set(chain.top, enabled)


def measure(source: str | None = None, size: int | None = None, options: CreateOptions | None = None,
            source_format: str | None = None, backing_file: str | None = None, policy: ChainPolicy | None = None,
            force_share: bool = False) -> dict:
    """qemu-img measure -O qcow2 [-U]: {'required', 'fully-allocated'[, 'bitmaps']}."""
    from . import measure as _measure
    if source is None:
        if size is None:
            raise InvalidArgumentError("measure needs a source image or a size")
        return _measure.measure_size(size, options)
    with open_chain(source, fmt=source_format, policy=policy, force_share=force_share) as chain:
        stop = None
        if backing_file:
            stop = next((img for img in chain.images[1:] if same_file(img.path, backing_file)), chain.top.backing)
        return _measure.measure_chain(chain.top, stop, options)


def plan_commit(path: str, top: str | None = None, base: str | None = None, remove_committed: bool = False,
                policy: ChainPolicy | None = None, measure: bool = True) -> CommitPlan:
    """What commit would do (a CommitPlan: the chain before and after, the bytes to copy), without writing.
    measure=False leaves the bytes to copy and the free space to the commit that follows (see commit.py)."""
    from . import commit as _commit
    return _commit.plan_commit(path, top=top, base=base, remove_committed=remove_committed, policy=policy,
                               measure=measure)


def commit(path: str, top: str | None = None, base: str | None = None, remove_committed: bool = False,
           policy: ChainPolicy | None = None, progress: Progress | None = None, plan: CommitPlan | None = None,
           empty_top: bool = True) -> CommitResult:
    """Commit top (default path) into base (default: top's backing file); see commit.py for the order of steps.
    empty_top=False leaves an active top holding its data (qemu-img commit -d). Returns a CommitResult."""
    from . import commit as _commit
    return _commit.commit(path, top=top, base=base, remove_committed=remove_committed, policy=policy,
                          progress=progress, plan=plan, empty_top=empty_top)


def plan_rebase(path: str, backing_file: str, backing_format: str | None = None, unsafe: bool = False,
                policy: ChainPolicy | None = None, measure: bool = True) -> RebasePlan:
    """What rebase would do (a RebasePlan: the chain before and after, the bytes to copy), without writing.
    measure=False leaves the bytes to copy to the rebase that follows (see rebase.py)."""
    from . import rebase as _rebase
    return _rebase.plan_rebase(path, backing_file, backing_format=backing_format, unsafe=unsafe, policy=policy,
                               measure=measure)


def rebase(path: str, backing_file: str, backing_format: str | None = None, unsafe: bool = False,
           policy: ChainPolicy | None = None, plan: RebasePlan | None = None) -> RebaseResult:
    """Change path's backing file ("" = none); returns a RebaseResult."""
    from . import rebase as _rebase
    return _rebase.rebase(path, backing_file, backing_format=backing_format, unsafe=unsafe, policy=policy, plan=plan)


def plan_convert(source: str, dest: str, compress: bool = False, backing_file: str | None = None,
                 backing_format: str | None = None, options: CreateOptions | None = None,
                 policy: ChainPolicy | None = None, source_format: str | None = None) -> ConvertPlan:
    """What convert would write (a ConvertPlan), without writing."""
    from . import convert as _convert
    return _convert.plan_convert(source, dest, compress=compress, backing_file=backing_file,
                                 backing_format=backing_format, options=options, policy=policy,
                                 source_format=source_format)


def convert(source: str, dest: str, compress: bool = False, backing_file: str | None = None,
            backing_format: str | None = None, options: CreateOptions | None = None, policy: ChainPolicy | None = None,
            source_format: str | None = None, progress: Progress | None = None) -> ConvertResult:
    """Write dest as a new qcow2 image holding source's guest view (standalone, or above backing_file); returns a
    ConvertResult."""
    from . import convert as _convert
    return _convert.convert(source, dest, compress=compress, backing_file=backing_file, backing_format=backing_format,
                            options=options, policy=policy, source_format=source_format, progress=progress)


def export_raw(source: str, dest: str, policy: ChainPolicy | None = None) -> int:
    """qemu-img convert -O raw: dest becomes a sparse raw file of source's guest view (written beside it and renamed
    when complete); the data bytes written."""
    from .raw_export import export_raw as _export
    return _export(source, dest, policy=policy)


# ---- persistent dirty bitmaps ----
def list_bitmaps(path: str, backing_chain: bool = False, force_share: bool = True,
                 policy: ChainPolicy | None = None) -> list[dict]:
    """Every bitmap of the image (and, with backing_chain, of every image below it), top first:
    [{"filename", "bitmaps": [{name, granularity, flags, in_use, enabled, trusted, reason}]}]."""
    from .bitmap_ops import describe
    with open_chain(path, force_share=force_share, policy=policy, backing=backing_chain) as chain:
        return [{"filename": img.path, "bitmaps": describe(img) if img.format_name == "qcow2" else []}
                for img in chain.images]


def plan_bitmap(path: str, name: str, state: str = "present", granularity: int | None = None,
                enabled: bool | None = None, merge_from: typing.Sequence[dict] = (),
                policy: ChainPolicy | None = None) -> BitmapPlan:
    """What bitmap() will do (a BitmapPlan), read without locks; raises what the run would refuse, the lock a
    running VM holds on the image included."""
    from .bitmap_state import merge_sources, plan
    with open_chain(path, fmt="qcow2", force_share=True, policy=policy, backing=_needs_chain(merge_from)) as chain:
        with merge_sources(chain, merge_from, policy, force_share=True) as sources:
            actions, before, after = plan(chain.top, name, state, granularity, enabled, sources)
    if actions:
        refuse_if_locked(path)
    return BitmapPlan(bool(actions), [_action_name(a) for a in actions], before, after)


def bitmap(path: str, name: str, state: str = "present", granularity: int | None = None, enabled: bool | None = None,
           merge_from: typing.Sequence[dict] = (), policy: ChainPolicy | None = None) -> BitmapResult:
    """Bring bitmap name of path to a state: present (added if missing), cleared (present and empty) or absent;
    enabled or disabled; with the bits of the bitmaps in merge_from ([{name, path, backing_chain}]) merged in.
    Returns a BitmapResult."""
    from .bitmap_state import merge_sources, plan, run
    with open_chain(path, fmt="qcow2", writable=True, policy=policy, backing=_needs_chain(merge_from)) as chain:
        with merge_sources(chain, merge_from, policy, force_share=False) as sources:
            actions, before, after = plan(chain.top, name, state, granularity, enabled, sources)
            if actions:
                after = run(chain.top, name, actions)
    return BitmapResult(bool(actions), [_action_name(a) for a in actions], before, after)


def _needs_chain(merge_from: typing.Sequence[dict]) -> bool:
    return any(item.get("backing_chain") and not item.get("path") for item in merge_from)


def _action_name(action: tuple[str, typing.Any]) -> str:
    verb, argument = action
    return argument.describe() if verb == "merge" else verb


def change_bitmap(path: str, action: str, name: str, granularity: int | None = None, enabled: bool = True,
                  source: str | None = None, source_file: str | None = None, source_format: str | None = None,
                  policy: ChainPolicy | None = None) -> bool:
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


def dirty_ranges(path: str, name: str, backing_chain: bool = False, force_share: bool = False,
                 allow_disabled: bool = False, policy: ChainPolicy | None = None) -> DirtyRanges:
    """The guest ranges bitmap name marks dirty (a DirtyRanges), merged across the layers of the chain that hold it
    with backing_chain. BitmapUnusableError (with its reason) unless every bitmap read is consistent and, unless
    allow_disabled, enabled: only then is it a record of every change since it was created."""
    from . import bitmap_ops as ops
    with open_chain(path, force_share=force_share, policy=policy, backing=backing_chain) as chain:
        ranges, layers = ops.chain_ranges(chain, name, need_enabled=not allow_disabled)
        granularity = ops.find(chain.top, name).granularity
        return DirtyRanges(name, [(start, end - start) for start, end in ranges],
                           sum(end - start for start, end in ranges), chain.top.size, granularity,
                           [img.path for img in layers])


def copy_ranges(source: str, dest: str, ranges: typing.Sequence[tuple[int, int]], backing_file: str | None = None,
                backing_format: str | None = None, source_format: str | None = None,
                options: CreateOptions | None = None, force_share: bool = False, policy: ChainPolicy | None = None,
                dry_run: bool = False, progress: Progress | None = None, compress: bool = False) -> CopyRangesResult:
    """Write dest, a new qcow2 layer over backing_file (None: standalone) holding source's guest view in ranges
    [(offset, length)] and zero clusters where they read zeros (copyranges.py); a CopyRangesResult. compress:
    the data clusters compressed (the type options.compression_type says, zlib by default)."""
    from .copyranges import copy_ranges as _copy
    return _copy(source, dest, ranges, backing_file=backing_file, backing_format=backing_format,
                 source_format=source_format, options=options, force_share=force_share, policy=policy,
                 dry_run=dry_run, progress=progress, compress=compress)

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Rebase: give an image another backing file.

unsafe: only the header changes (for moved or renamed files). Also what a safe rebase reduces to when
the new name designates the file already in use (same device and inode).

safe: first copy into the image every range where the old and the new backing views differ, flush,
then switch the header. When the new backing file is in the old chain, metadata alone says which
ranges can differ: those the dropped layers decide; they are copied without reading the new base.
Otherwise both views are read and compared (bytes against bytes, a memcmp), and only differing
clusters are written. Backing "" flattens the image in place.
"""

from __future__ import annotations

import contextlib
import os
import time
import typing

from .backing_name import set_backing
from .bitmaps import recorded_writes
from .chain import DEFAULT_POLICY, check_backing_reference, open_chain, resolve_backing_path
from .copyview import CHUNK, CopyStats, copy_runs, planned_bytes, ring_chunks
from .directio import aligned_bytearray
from .errors import BackingChainError, ImageLockedError, InvalidArgumentError, Qcow2Error
from .image import probe_is_qcow2
from .info import chain_info
from .locking import holders_conflict
from .paths import position_of, same_file
from .records import RebasePlan, RebaseResult, chain_entry
from .segments import RUN_BELOW, RUN_DATA, RUN_ZERO, data_bytes, layer_runs, sweep
from .space import require_space
from .view_diff import differing_sectors, sector_differences
from .zeros import zero_bytes

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import Chain, ChainPolicy, Image
    from .image import Qcow2Image
    from .records import ChainEntry
    from .segments import Run


# A comparison reads two views for each chunk it may write, and writes only the clusters that differ: its writes
# need more buffers behind the reads than a copy's. Half its base differing (454 MiB written as 4 MiB direct
# writes), three buffers waited for their writes: 1.06-1.30 s, against 0.65-0.82 s with six (0.84-0.98 s with
# four, 0.82-0.89 s with eight). Other copies keep three: with six, a flatten of the 1 TiB image peaked at 70.5 MiB
# (58.6 with three) and no copy row got faster.
COMPARE_BUFFERS = 6


def plan_rebase(path: str, backing_file: str, backing_format: str | None = None, unsafe: bool = False,
                policy: ChainPolicy | None = None, measure: bool = True) -> RebasePlan:
    """What rebase would do, without writing. Raises what the real run would raise, a lock another process
    holds on an image it writes or reads included (ImageLockedError).

    ``measure=False``, for a plan that rebase(plan=...) carries out right after: the layers' data is not walked to
    count the bytes to copy (bytes_copied is None where there is a copy), since the rebase walks it again under
    its locks; everything else is planned and described as the measured plan has it."""
    return _planned(path, backing_file, backing_format, unsafe, policy, dry_run=True, measure=measure)


def rebase(path: str, backing_file: str, backing_format: str | None = None, unsafe: bool = False,
           policy: ChainPolicy | None = None, plan: RebasePlan | None = None) -> RebaseResult:
    """Point path at backing_file ("" = none). ``plan``, from plan_rebase with the same arguments just before,
    spares reading the chains again; the header is checked once path is open for writing, and everything is
    planned anew if it changed meanwhile."""
    started = time.time()
    if plan is None:
        plan = _planned(path, backing_file, backing_format, unsafe, policy, dry_run=False)
    if not plan.changed:
        return _result(plan, 0, started)
    policy = policy or DEFAULT_POLICY
    if plan.header_only:
        with open_chain(path, fmt="qcow2", writable=True, backing=False, policy=policy) as chain:
            if not _same_header(chain.top, plan):
                chain.close()
                return rebase(path, backing_file, backing_format, unsafe, policy)
            set_backing(chain.top, backing_file, plan.new_format)
        return _result(plan, 0, started)
    new_path = check_backing_reference(backing_file, path, policy) if backing_file else None
    bytes_copied = _safe_rebase(path, backing_file, new_path, plan, policy)
    if bytes_copied is None:  # the header changed meanwhile
        return rebase(path, backing_file, backing_format, unsafe, policy)
    return _result(plan, bytes_copied, started)


def _result(plan: RebasePlan, bytes_copied: int, started: float) -> RebaseResult:
    return RebaseResult(plan.changed, plan.old_backing, plan.old_format, plan.new_backing, plan.new_format,
                        plan.header_only, bytes_copied, time.time() - started)


def _same_header(img: Qcow2Image, plan: RebasePlan) -> bool:
    name = img.backing_filename or ""
    return (name, img.backing_format if name else None) == (plan.old_backing, plan.old_format)


def _check_arguments(backing_file: str, backing_format: str | None) -> None:
    if backing_file is None:
        raise InvalidArgumentError("backing_file is required (use an empty string to make the image standalone)")
    if backing_file and not backing_format:
        raise InvalidArgumentError("Backing format must be given with a backing file (qcow2 or raw)")
    if backing_format and backing_format not in ("qcow2", "raw"):
        raise InvalidArgumentError("Backing format must be qcow2 or raw (got %r)" % (backing_format,))


def _open_old_chain(path: str, policy: ChainPolicy) -> tuple[Chain, Qcow2Error | None]:
    """(path's chain, None), or (path alone, the error) when its backing chain cannot be opened: an unsafe
    rebase, or one that changes nothing, does not need it. An error of path itself is raised."""
    try:
        return open_chain(path, fmt="qcow2", force_share=True, policy=policy), None
    except Qcow2Error as exc:
        return open_chain(path, fmt="qcow2", force_share=True, backing=False, policy=policy), exc


def _planned(path: str, backing_file: str, backing_format: str | None, unsafe: bool, policy: ChainPolicy, dry_run: bool,
             measure: bool = True) -> RebasePlan:
    """The plan; dry_run also checks the locks and describes the chains for a diff, and counts the bytes if
    ``measure``."""
    _check_arguments(backing_file, backing_format)
    policy = policy or DEFAULT_POLICY
    old, old_error = _open_old_chain(path, policy)
    with old, contextlib.ExitStack() as opened:
        return _plan(old, old_error, opened, path, backing_file, backing_format, unsafe, policy, dry_run, measure)


def _old_chain_required(old_error: Qcow2Error, path: str) -> Qcow2Error:
    """A safe rebase reads the whole old chain; say what to do when it cannot be opened."""
    if isinstance(old_error, BackingChainError):
        return type(old_error)("%s. A safe rebase reads the old backing chain to keep the image's content; if the "
                               "old backing file was moved or renamed, an unsafe rebase (mode=unsafe) rewrites only "
                               "the header to point at its new name" % str(old_error).rstrip("."), path)
    return old_error


def _plan(old: Chain, old_error: Qcow2Error | None, opened: contextlib.ExitStack, path: str, backing_file: str,
          backing_format: str | None, unsafe: bool, policy: ChainPolicy, dry_run: bool, measure: bool) -> RebasePlan:
    img = old.top
    old_name = img.backing_filename or ""
    old_format = img.backing_format if old_name else None
    new_format = backing_format if backing_file else None
    infos = chain_info(old) if dry_run else []
    entries = [chain_entry(info) for info in infos]

    def plan(changed: bool, header_only: bool, bytes_copied: int | None = 0, exact: bool = True, below: typing.Sequence[ChainEntry] = ()) -> RebasePlan:
        after = entries
        if changed and entries:
            after = [entries[0]._replace(backing_filename=backing_file or None, backing_format=new_format)] + list(below)
        return RebasePlan(changed, old_name, old_format, backing_file, new_format, header_only, bytes_copied, exact,
                          infos, after)

    if old_name == backing_file and old_format == new_format:
        if old_error is not None and not isinstance(old_error, BackingChainError):
            raise old_error
        return plan(False, True)
    new_path = new_chain = new_error = in_chain = None
    if backing_file:
        new_path = check_backing_reference(backing_file, path, policy)
    new_exists = new_path is not None and os.path.exists(new_path)
    if new_exists:
        _check_format(new_path, new_format, path)
        if old_error is None:
            in_chain = position_of(old.paths[1:], new_path)
        if in_chain is None:
            try:
                new_chain = opened.enter_context(open_chain(new_path, fmt=new_format, force_share=True, policy=policy))
            except Qcow2Error as exc:
                new_error = exc
                _refuse_loop(path, new_path, new_format, policy)
            else:
                if position_of(new_chain.paths, path) is not None:
                    raise BackingChainError("Backing file '%s' creates an infinite loop." % new_path, path)
    header_only = bool(unsafe or (old_name and same_file(resolve_backing_path(path, old_name), new_path)))
    if dry_run:
        _refuse_held(path, old, old_error, new_chain, reads=not header_only)
    if header_only:
        if old_error is not None and not isinstance(old_error, BackingChainError):
            raise old_error
        return plan(True, True, below=_described_below(new_path, new_exists, entries, in_chain, new_chain, policy, dry_run))
    if old_error is not None:
        raise _old_chain_required(old_error, path)
    if new_path is not None and not new_exists:
        raise BackingChainError("New backing file '%s' of '%s' could not be opened: No such file or directory (a safe "
                                "rebase reads it; mode=unsafe records a backing file that does not exist yet)"
                                % (new_path, path), path)
    if new_error is not None:
        raise new_error
    if not dry_run:
        return plan(True, False)
    exact = new_path is not None and in_chain is not None
    below = _described_below(new_path, new_exists, entries, in_chain, new_chain, policy, dry_run)
    if not measure:
        return plan(True, False, None, exact=exact, below=below)
    if in_chain is not None or new_path is None:
        dropped = [r for r in layer_runs(img.backing, old.images[1 + in_chain] if in_chain is not None else None, 0,
                                         img.size) if r[2] in (RUN_DATA, RUN_ZERO)]
        estimate = planned_bytes(_subtract_allocated(img, dropped), img.cluster_size, img.size,
                                 "zero" if new_path is not None else "skip")
    else:
        estimate = sum(end - start for start, end in _candidates(img, new_chain.top))
    return plan(True, False, estimate, exact=exact, below=below)


def _described_below(new_path: str | None, new_exists: bool, entries: list[ChainEntry], in_chain: int | None,
                     new_chain: Chain | None, policy: ChainPolicy, dry_run: bool) -> list[ChainEntry]:
    """The new backing chain as a diff shows it, spelled from new_path: as far as it can be read (the new backing
    file alone when its own backing chain cannot be opened; nothing when it does not exist yet)."""
    if not dry_run or not new_exists:
        return []
    if in_chain is not None:  # the old chain's tail, each file named as the new backing name leads to it
        below, name = [], new_path
        for entry in entries[1 + in_chain:]:
            below.append(entry._replace(filename=name))
            if entry.backing_filename:
                name = resolve_backing_path(name, entry.backing_filename)
        return below
    if new_chain is not None:
        return [chain_entry(info) for info in chain_info(new_chain)]
    with open_chain(new_path, force_share=True, backing=False, policy=policy) as alone:
        return [chain_entry(info) for info in chain_info(alone)]


def _refuse_held(path: str, old: Chain, old_error: Qcow2Error | None, new_chain: Chain | None, reads: bool) -> None:
    """The locks the real run will take must be free. It writes the image; a safe rebase also reads the old
    backing chain and the new backing file's chain."""
    candidates = [(path, True)]
    if reads:
        if old_error is None:
            candidates += [(p, False) for p in old.paths if not same_file(p, path)]
        if new_chain is not None:
            candidates += [(p, False) for p in new_chain.paths if not same_file(p, path)]
    for candidate, write in candidates:
        conflict = holders_conflict(candidate, write)
        if conflict:
            raise ImageLockedError(conflict, candidate)


def _refuse_loop(path: str, new_path: str, new_format: str | None, policy: ChainPolicy) -> None:
    """Neither the new backing file nor any image below it may be the image itself (its own overlay, say).

    Walks the headers only, without locks, and stops where the chain cannot be followed: an unsafe rebase may
    point at a chain that is not complete yet.
    """
    current, fmt = new_path, new_format
    for _unused in range(policy.max_depth):
        if same_file(current, path):
            raise BackingChainError("Backing file '%s' creates an infinite loop." % new_path, path)
        if fmt != "qcow2" or not os.path.exists(current):
            return
        try:
            with open_chain(current, fmt="qcow2", force_share=True, backing=False, policy=policy) as one:
                name, fmt = one.top.backing_filename, one.top.backing_format
            if not name:
                return
            current = check_backing_reference(name, current, policy)
            fmt = fmt or ("qcow2" if os.path.exists(current) and probe_is_qcow2(current) else "raw")
        except Qcow2Error:
            return


def _check_format(new_path: str, fmt: str | None, path: str) -> None:
    if fmt == "qcow2" and not probe_is_qcow2(new_path):
        raise BackingChainError("Backing format mismatch: %s is not a qcow2 image (backing_format=qcow2 for %s)"
                                % (new_path, path), path)
    if fmt == "raw" and probe_is_qcow2(new_path):
        raise BackingChainError("Backing format mismatch: %s is a qcow2 image (backing_format=raw for %s would show "
                                "its qcow2 metadata to the guest)" % (new_path, path), path)


def _safe_rebase(path: str, backing_file: str, new_path: str | None, plan: RebasePlan, policy: ChainPolicy) -> int | None:
    """Copy what the new backing view would change, then switch the header; None if the header is no longer the
    one planned for (the image changed meanwhile)."""
    with open_chain(path, fmt="qcow2", writable=True, policy=policy) as old_chain:
        img = old_chain.top
        if not _same_header(img, plan):
            return None
        stats = CopyStats()  # a standalone image reads zeros below: a safe rebase keeps that view too
        in_chain = position_of(old_chain.paths[1:], new_path) if new_path is not None else None
        if in_chain is not None or new_path is None:
            # Metadata decides: only what the dropped layers hold can differ (all of it, when flattening).
            below = old_chain.images[1 + in_chain] if in_chain is not None else None
            dropped = [r for r in layer_runs(img.backing, below, 0, img.size) if r[2] in (RUN_DATA, RUN_ZERO)]
            runs = _subtract_allocated(img, dropped)
            require_space(path, data_bytes(runs), "rebase of %s" % path)
            with recorded_writes(img, _differing(img, below, runs)):
                copy_runs(img, _ZeroesAgainst(img, below), runs,
                          zero_runs="zero" if new_path is not None else "skip", stats=stats)
        else:
            with open_chain(new_path, fmt=plan.new_format, policy=policy) as new_chain:
                if position_of(new_chain.paths, path) is not None:
                    raise BackingChainError("Backing file '%s' creates an infinite loop." % new_path, path)
                with recorded_writes(img) as record:
                    _copy_differences(img, new_chain.top, stats, record)
        img.flush()
        set_backing(img, backing_file, plan.new_format)
    return stats.bytes_written + stats.bytes_zeroed


class _ZeroesAgainst:
    """The image as a copy destination whose zero writes are judged against the new backing file.

    The writer skips (or, in a v2 image, drops) a zero write where nothing lies below, and "below" is about to
    become the new backing file: judged against the old one, a range past the old backing file's end would be
    left reading the new backing file's data after the switch. Data writes and every copy-on-write keep
    reading the old view, which is the view being preserved.
    """

    def __init__(self, img: Qcow2Image, below: Image | None) -> None:
        self.img = img
        self.file = img.file
        self.below = below
        self.cluster_size = img.cluster_size
        self.size = img.size

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.img.write(offset, data)

    def write_many(self, pieces: typing.Sequence[tuple[int, bytes | bytearray | memoryview]]) -> None:
        self.img.write_many(pieces)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zero [offset, offset+length). Partial clusters (or subclusters) are written as zero data through the old
        view, whose copy-on-write keeps the rest of the cluster as the image reads it now; only the aligned middle,
        which the writer turns into zero clusters without reading anything, is judged against the new backing file."""
        img = self.img
        geo = img.geo
        gran = geo.subcluster_size if geo.extended_l2 else geo.cluster_size
        end = offset + length
        a = -(-offset // gran) * gran
        b = end // gran * gran
        if end == img.size:
            b = max(b, min(end, -(-end // gran) * gran))  # the last partial cluster is whole for the guest
        if a >= b:
            img.write(offset, zero_bytes(length))
            return
        if offset < a:
            img.write(offset, zero_bytes(a - offset))
        if b < end:
            img.write(b, zero_bytes(end - b))
        old = img.backing
        img.backing = self.below
        try:
            img.write_zeroes(a, b - a)
        finally:
            img.backing = old


def _differing(img: Qcow2Image, new_top: Image | None, runs: list[Run]) -> list[tuple[int, int]]:
    """What qemu-img rebase writes, and so dirties in the image's enabled bitmaps: the sectors of runs where the old
    backing view and the new one differ (read only when there are enabled bitmaps to tell)."""
    if img.bitmaps is None:
        return []
    return differing_sectors(img.read_backing_into, lambda view, offset: _read_view(new_top, view, offset),
                             [(start, end) for start, end, _kind in runs])


def _subtract_allocated(img: Qcow2Image, runs: list[Run]) -> list[Run]:
    """Drop the parts of runs the image decides itself (its own data masks the backing anyway)."""
    out = []
    for start, end, kind in runs:
        for s, e, own in layer_runs(img, img.backing, start, end - start):
            if own == RUN_BELOW:
                out.append((s, e, kind))
    return out


def _copy_differences(img: Qcow2Image, new_top: Image, stats: CopyStats,
                      record: typing.Optional[typing.Callable[[int, int], None]]) -> None:
    """Unrelated new base: compare old and new views where the image itself is unallocated; record(start, end) gets
    the sectors that differ (None: no enabled bitmap to tell, so they are not looked for).

    The old view is read into the copy buffers flatten and commit use, so the clusters that differ go to disk as
    theirs do: straight from those buffers, direct where aligned, behind the next reads."""
    cs = img.geo.cluster_size
    chunk = max(cs, (CHUNK // cs) * cs)
    new_view = memoryview(aligned_bytearray(chunk))
    zeroes = _ZeroesAgainst(img, new_top)
    with img.file.copy_buffers(COMPARE_BUFFERS, chunk) as ring:
        for start, end in _candidates(img, new_top):
            for pos, n, buf, first in ring_chunks(ring, start, end, cs, img.size):
                img.read_backing_into(memoryview(buf)[first:first + n], pos)
                _read_view(new_top, new_view[:n], pos)
                if not buf.startswith(new_view[:n], first, first + n):  # memcmp, no copy
                    if record is not None:
                        _record_differing_sectors(record, buf, first, new_view, pos, n, start, end)
                    _write_differing(zeroes, buf, first, new_view, pos, n, stats, start, end)


def _record_differing_sectors(record: typing.Callable[[int, int], None], buf: bytearray, first: int,
                              new_view: memoryview, offset: int, length: int, run_start: int, run_end: int) -> None:
    """record() the sectors of the piece (old view in buf[first:first+length], guest offset ``offset``) that differ
    from the new view, within the unallocated run [run_start, run_end)."""
    lo, hi = max(offset, run_start), min(offset + length, run_end)
    old = buf[first + lo - offset:first + hi - offset]
    for s, e in sector_differences(old, new_view[lo - offset:hi - offset].tobytes(), lo, hi - lo):
        record(s, e)


def _candidates(img: Qcow2Image, new_top: Image) -> list[tuple[int, int]]:
    """Ranges where the image decides nothing and the old or the new view holds data: only there can they differ."""
    own = layer_runs(img, img.backing, 0, img.size)
    old = layer_runs(img.backing, None, 0, img.size)
    new = layer_runs(new_top, None, 0, min(img.size, new_top.size))
    candidates = []
    for start, end, (own_kind, old_kind, new_kind) in sweep(own, old, new):
        if own_kind == RUN_BELOW and RUN_DATA in (old_kind, new_kind):
            if candidates and candidates[-1][1] == start:
                candidates[-1] = (candidates[-1][0], end)
            else:
                candidates.append((start, end))
    return candidates


def _read_view(top: Image | None, view: memoryview, offset: int) -> None:
    """top's guest view (zeros past its end; all zeros without a top: a flatten's new view)."""
    if top is None or offset >= top.size:
        view[:] = zero_bytes(len(view))
        return
    inside = min(len(view), top.size - offset)
    top.read_into(view[:inside], offset)
    if inside < len(view):
        view[inside:] = zero_bytes(len(view) - inside)


def _write_differing(dest: _ZeroesAgainst, buf: bytearray, first: int, new_view: memoryview, offset: int, length: int,
                     stats: CopyStats, run_start: int, run_end: int) -> None:
    """Write the old view's clusters (buf[first:first+length], guest offset ``offset``) where they differ from the new
    view, clipped to the unallocated run [run_start, run_end). Neighbouring clusters go in one write, from buf."""
    cs = dest.cluster_size
    view = memoryview(buf)
    gathered: list = []  # [lo, hi, all zeros] of the clusters gathered for one write

    def write_gathered() -> None:
        if not gathered:
            return
        lo, hi, zero = gathered
        if zero:
            dest.write_zeroes(lo, hi - lo)
            stats.bytes_zeroed += hi - lo
        else:
            dest.write(lo, view[first + lo - offset:first + hi - offset])
            stats.bytes_written += hi - lo
        gathered.clear()

    pos = 0
    while pos < length:
        n = min(cs, length - pos)
        lo, hi = max(offset + pos, run_start), min(offset + pos + n, run_end)
        if hi > lo and not buf.startswith(new_view[pos:pos + n], first + pos, first + pos + n):
            zero = buf.startswith(zero_bytes(hi - lo), first + lo - offset, first + hi - offset)
            if gathered and gathered[1] == lo and gathered[2] == zero:
                gathered[1] = hi
            else:
                write_gathered()
                gathered.extend((lo, hi, zero))
        pos += n
    write_gathered()

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

import os
import time

from .backing_name import same_file, set_backing
from .bitmaps import recorded_writes
from .chain import check_backing_reference, open_chain, resolve_backing_path
from .copyview import CopyStats, copy_runs, planned_bytes
from .errors import BackingChainError, ImageLockedError, InvalidArgumentError, Qcow2Error
from .locking import holders_conflict
from .image import probe_is_qcow2
from .segments import RUN_BELOW, RUN_DATA, RUN_ZERO, data_bytes, layer_runs, sweep
from .space import require_space
from .view_diff import differing_sectors, sector_differences
from .zeros import zero_bytes

COMPARE_CHUNK = 2 << 20


def rebase(path, backing_file, backing_format=None, unsafe=False, policy=None, dry_run=False):
    started = time.time()
    if backing_file is None:
        raise InvalidArgumentError("backing_file is required (use an empty string to make the image standalone)")
    if backing_file and not backing_format:
        raise InvalidArgumentError("Backing format must be given with a backing file (qcow2 or raw)")
    if backing_format and backing_format not in ("qcow2", "raw"):
        raise InvalidArgumentError("Backing format must be qcow2 or raw (got %r)" % (backing_format,))
    with open_chain(path, fmt="qcow2", force_share=True, backing=False) as chain:
        old_name = chain.top.backing_filename or ""
        old_format = chain.top.backing_format if old_name else None
    new_format = backing_format if backing_file else None
    result = {"changed": False, "old_backing": old_name, "old_format": old_format, "new_backing": backing_file,
              "new_format": new_format, "header_only": True, "bytes_copied": 0, "duration": 0.0}
    if old_name == backing_file and old_format == new_format:
        return result
    new_path = None
    if backing_file:
        new_path = check_backing_reference(backing_file, path, policy or _default_policy())
        if os.path.exists(new_path):
            _check_format(new_path, new_format, path)
            _refuse_loop(path, new_path, new_format, policy or _default_policy())
    header_only = unsafe or (
        old_name and backing_file and same_file(resolve_backing_path(path, old_name), new_path))
    result["changed"] = True
    result["header_only"] = bool(header_only)
    if dry_run:
        _refuse_held(path, new_path, not header_only, policy)
    if header_only:
        if not dry_run:
            with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
                set_backing(chain.top, backing_file, new_format)
        result["duration"] = time.time() - started
        return result
    _check_old_chain(path, policy)
    if new_path is not None and not os.path.exists(new_path):
        raise BackingChainError("New backing file '%s' of '%s' could not be opened: No such file or directory (a safe "
                                "rebase reads it; mode=unsafe records a backing file that does not exist yet)"
                                % (new_path, path), path)
    if dry_run:
        result["bytes_copied"] = _estimate(path, new_path, new_format, policy)
    else:
        result["bytes_copied"] = _safe_rebase(path, backing_file, new_path, new_format, policy)
    result["duration"] = time.time() - started
    return result


def _estimate(path, new_path, new_format, policy):
    """Check mode's figure: what an in-chain rebase or a flatten will copy, or at most what an unrelated base
    makes it compare and copy (metadata only, no guest data read)."""
    with open_chain(path, fmt="qcow2", force_share=True, policy=policy) as old_chain:
        img = old_chain.top
        in_chain = next((layer for layer in old_chain.images[1:] if new_path and same_file(layer.path, new_path)), None)
        if in_chain is not None or new_path is None:
            dropped = [r for r in layer_runs(img.backing, in_chain, 0, img.size) if r[2] in (RUN_DATA, RUN_ZERO)]
            return planned_bytes(_subtract_allocated(img, dropped), img.cluster_size, img.size,
                                 "zero" if new_path is not None else "skip")
        with open_chain(new_path, fmt=new_format, force_share=True, policy=policy) as new_chain:
            return sum(end - start for start, end in _candidates(img, new_chain.top))


def _default_policy():
    from .chain import DEFAULT_POLICY
    return DEFAULT_POLICY


def _refuse_held(path, new_path, safe, policy):
    """Check mode: the locks the real run will take must be free. It writes the image; a safe rebase also reads
    the old backing chain and the new backing file's chain."""
    reads = []
    for top in ((path, new_path) if new_path else (path,)) if safe else ():
        try:
            with open_chain(top, force_share=True, policy=policy) as chain:
                reads.extend(img.path for img in chain.images if not same_file(img.path, path))
        except Qcow2Error:
            pass  # the real run reports what cannot be opened
    for candidate, write in [(path, True)] + [(p, False) for p in reads]:
        conflict = holders_conflict(candidate, write)
        if conflict:
            raise ImageLockedError(conflict, candidate)


def _check_old_chain(path, policy):
    """A safe rebase reads the whole old chain; say what to do when it cannot be opened (also in check mode)."""
    try:
        with open_chain(path, fmt="qcow2", force_share=True, policy=policy):
            pass
    except BackingChainError as exc:
        raise type(exc)("%s. A safe rebase reads the old backing chain to keep the image's content; if the old "
                        "backing file was moved or renamed, an unsafe rebase (mode=unsafe) rewrites only the header "
                        "to point at its new name" % str(exc).rstrip("."), path) from None


def _refuse_loop(path, new_path, new_format, policy):
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


def _check_format(new_path, fmt, path):
    if fmt == "qcow2" and not probe_is_qcow2(new_path):
        raise BackingChainError("Backing format mismatch: %s is not a qcow2 image (backing_format=qcow2 for %s)"
                                % (new_path, path), path)
    if fmt == "raw" and probe_is_qcow2(new_path):
        raise BackingChainError("Backing format mismatch: %s is a qcow2 image (backing_format=raw for %s would show "
                                "its qcow2 metadata to the guest)" % (new_path, path), path)


def _safe_rebase(path, backing_file, new_path, new_format, policy):
    with open_chain(path, fmt="qcow2", writable=True, policy=policy) as old_chain:
        img = old_chain.top
        stats = CopyStats()  # a standalone image reads zeros below: a safe rebase keeps that view too
        in_chain = None
        if new_path is not None:
            for layer in old_chain.images[1:]:
                if same_file(layer.path, new_path):
                    in_chain = layer
                    break
        if in_chain is not None or new_path is None:
            # Metadata decides: only what the dropped layers hold can differ (all of it, when flattening).
            dropped = [r for r in layer_runs(img.backing, in_chain, 0, img.size) if r[2] in (RUN_DATA, RUN_ZERO)]
            runs = _subtract_allocated(img, dropped)
            require_space(path, data_bytes(runs), "rebase of %s" % path)
            with recorded_writes(img, _differing(img, in_chain, runs)):
                copy_runs(img, _ZeroesAgainst(img, in_chain), runs,
                          zero_runs="zero" if new_path is not None else "skip", stats=stats)
        else:
            with open_chain(new_path, fmt=new_format, policy=policy) as new_chain:
                for member in new_chain.images:
                    if same_file(member.path, path):
                        raise BackingChainError("Backing file '%s' creates an infinite loop." % new_path, path)
                with recorded_writes(img) as record:
                    _copy_differences(img, new_chain.top, stats, record)
        img.flush()
        set_backing(img, backing_file, new_format)
    return stats.bytes_written + stats.bytes_zeroed


class _ZeroesAgainst:
    """The image as a copy destination whose zero writes are judged against the new backing file.

    The writer skips (or, in a v2 image, drops) a zero write where nothing lies below, and "below" is about to
    become the new backing file: judged against the old one, a range past the old backing file's end would be
    left reading the new backing file's data after the switch. Data writes and every copy-on-write keep
    reading the old view, which is the view being preserved.
    """

    def __init__(self, img, below):
        self.img = img
        self.file = img.file
        self.below = below
        self.cluster_size = img.cluster_size
        self.size = img.size

    def write(self, offset, data):
        self.img.write(offset, data)

    def write_zeroes(self, offset, length):
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


def _differing(img, new_top, runs):
    """What qemu-img rebase writes, and so dirties in the image's enabled bitmaps: the sectors of runs where the old
    backing view and the new one differ (read only when there are enabled bitmaps to tell)."""
    if img.bitmaps is None:
        return []
    return differing_sectors(img.read_backing_into, lambda view, offset: _read_view(new_top, view, offset),
                             [(start, end) for start, end, _kind in runs])


def _subtract_allocated(img, runs):
    """Drop the parts of runs the image decides itself (its own data masks the backing anyway)."""
    out = []
    for start, end, kind in runs:
        for s, e, own in layer_runs(img, img.backing, start, end - start):
            if own == RUN_BELOW:
                out.append((s, e, kind))
    return out


def _copy_differences(img, new_top, stats, record):
    """Unrelated new base: compare old and new views where the image itself is unallocated; record(start, end) gets
    the sectors that differ."""
    cs = img.geo.cluster_size
    chunk = max(cs, (COMPARE_CHUNK // cs) * cs)
    old_buf, new_buf = bytearray(chunk), bytearray(chunk)
    old_view, new_view = memoryview(old_buf), memoryview(new_buf)
    zeroes = _ZeroesAgainst(img, new_top)
    for start, end in _candidates(img, new_top):
        pos = (start // cs) * cs
        stop = min(img.size, -(-end // cs) * cs)
        while pos < stop:
            n = min(chunk, stop - pos)
            img.read_backing_into(old_view[:n], pos)
            _read_view(new_top, new_view[:n], pos)
            if old_buf[:n] != new_buf[:n]:
                lo, hi = max(pos, start), min(pos + n, end)
                for s, e in sector_differences(old_buf[lo - pos:hi - pos], new_buf[lo - pos:hi - pos], lo, hi - lo):
                    record(s, e)
                _write_differing(zeroes, old_buf, new_buf, pos, n, cs, stats, start, end)
            pos += n


def _candidates(img, new_top):
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


def _read_view(top, view, offset):
    """top's guest view (zeros past its end; all zeros without a top: a flatten's new view)."""
    if top is None or offset >= top.size:
        view[:] = zero_bytes(len(view))
        return
    inside = min(len(view), top.size - offset)
    top.read_into(view[:inside], offset)
    if inside < len(view):
        view[inside:] = zero_bytes(len(view) - inside)


def _write_differing(img, old_buf, new_buf, offset, length, cs, stats, run_start, run_end):
    """Write the old view's clusters where they differ from the new view (clipped to the unallocated run)."""
    pos = 0
    while pos < length:
        n = min(cs, length - pos)
        if old_buf[pos:pos + n] != new_buf[pos:pos + n]:
            lo = max(offset + pos, run_start)
            hi = min(offset + pos + n, run_end)
            if hi > lo:
                data = old_buf[lo - offset:hi - offset]
                if data == zero_bytes(len(data)):
                    img.write_zeroes(lo, hi - lo)
                    stats.bytes_zeroed += hi - lo
                else:
                    img.write(lo, data)
                    stats.bytes_written += hi - lo
        pos += n

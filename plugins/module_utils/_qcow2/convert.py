# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Flatten: write a new qcow2 image from any chain or raw file (qemu-img convert -O qcow2 [-c] [-B]).

The image is built under a temporary name and renamed over the destination when complete (newimage.py).
Zero ranges stay unallocated. With a backing file, only what lies above it is copied (and zero ranges become zero
clusters so they still mask it): exactly when the backing file is in the source's chain, or, as
qemu-img convert -B does, the source's top layer when it is not.
"""

from __future__ import annotations

import os
import time
import typing

from .chain import check_backing_reference, detect_format, open_chain, DEFAULT_POLICY
from .compressed_writer import copy_runs_compressed
from .copyview import CopyStats, copy_runs
from .create import CreateOptions
from .errors import BackingChainError, InvalidArgumentError
from .image import probe_is_qcow2
from .measure import measure_chain
from .newimage import check_destination, new_image, refuse_held
from .paths import same_file
from .records import ConvertPlan, ConvertResult
from .segments import RUN_BELOW, RUN_ZERO, data_bytes, layer_runs
from .space import require_space

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import Chain, ChainPolicy
    from .copyview import Progress
    from .segments import Run


def _options_for(options: CreateOptions | None, size: int, backing_file: str | None, backing_format: str | None) -> CreateOptions:
    opts = CreateOptions(**vars(options)) if options is not None else CreateOptions()
    opts.size = -(-size // 512) * 512  # a raw source of any length: qemu-img convert rounds up to whole sectors
    opts.backing_file = backing_file or None
    opts.backing_format = backing_format if backing_file else None
    if opts.backing_file:
        opts.preallocation = "off"
    return opts


class _Prepared(typing.NamedTuple):  # what plan_convert and convert both work out
    plan: ConvertPlan
    options: object  # CreateOptions of the new image
    runs: list  # segments.layer_runs of the source's view to copy
    outside: bool  # the new backing file is not in the source's chain


def plan_convert(source: str, dest: str, compress: bool = False, backing_file: str | None = None,
                 backing_format: str | None = None, options: CreateOptions | None = None,
                 policy: ChainPolicy | None = None, source_format: str | None = None) -> ConvertPlan:
    """What convert would write, without writing; raises what the real run would raise before writing, too
    little free space for the new image included (NoSpaceError)."""
    policy = policy or DEFAULT_POLICY
    with open_chain(source, fmt=_source_format(source, dest, backing_file, backing_format, source_format),
                    policy=policy) as chain:
        plan = _prepare(chain, source, dest, compress, backing_file, backing_format, options, policy).plan
    require_space(dest, plan.required, "writing %s" % dest)
    return plan


def _source_format(source: str, dest: str, backing_file: str | None, backing_format: str | None, source_format: str | None) -> str:
    """Check what can be checked before opening the source; the format to open it with."""
    if backing_file and not backing_format:
        raise InvalidArgumentError("Backing format must be given with a backing file (qcow2 or raw)")
    check_destination(dest)
    return source_format or detect_format(source)


def _prepare(chain: Chain, source: str, dest: str, compress: bool, backing_file: str | None, backing_format: str | None,
             options: CreateOptions | None, policy: ChainPolicy) -> _Prepared:
    top = chain.top
    for img in chain.images:
        if same_file(img.path, dest):
            raise InvalidArgumentError("Destination %s is part of the backing chain of the source %s (%s); "
                                       "replacing it would destroy what is being read" % (dest, source, img.path), dest)
    stop = None
    outside = False
    if backing_file:
        target = check_backing_reference(backing_file, dest, policy)
        if same_file(target, dest):
            raise InvalidArgumentError("Destination %s would be its own backing file (%s)" % (dest, backing_file), dest)
        if os.path.exists(target) and probe_is_qcow2(target) != (backing_format == "qcow2"):
            raise BackingChainError("Backing format mismatch: %s is %sa qcow2 image (backing_format=%s for %s)"
                                    % (target, "" if backing_format == "raw" else "not ", backing_format, dest), dest)
        stop = next((img for img in chain.images[1:] if same_file(img.path, target)), None)
        outside = stop is None
        if outside:
            stop = top.backing
    refuse_held(dest)
    opts = _options_for(options, top.size, backing_file, backing_format)
    runs = layer_runs(top, stop, 0, top.size)
    measured = measure_chain(top, stop, opts, runs)
    if outside:
        runs = _zeros_past(runs, stop.size if stop is not None else 0)
    return _Prepared(ConvertPlan(True, dest, measured["required"], data_bytes(runs), bool(compress)), opts, runs, outside)


def convert(source: str, dest: str, compress: bool = False, backing_file: str | None = None,
            backing_format: str | None = None, options: CreateOptions | None = None, policy: ChainPolicy | None = None,
            source_format: str | None = None, progress: Progress | None = None) -> ConvertResult:
    """Write dest as a new qcow2 image holding source's guest view (standalone, or above backing_file)."""
    started = time.time()
    policy = policy or DEFAULT_POLICY
    with open_chain(source, fmt=_source_format(source, dest, backing_file, backing_format, source_format),
                    policy=policy) as chain:
        top = chain.top
        prepared = _prepare(chain, source, dest, compress, backing_file, backing_format, options, policy)
        plan, opts, runs, outside = prepared
        require_space(dest, plan.required, "writing %s" % dest)
        with new_image(dest, opts, policy) as out_chain:
            out = out_chain.top
            stats = CopyStats()
            saved_backing = top.backing
            if outside:
                # like qemu-img convert -B: the top layer over the new backing file, also in the parts of
                # clusters the top layer does not cover (which whole-cluster copies read)
                top.backing = out.backing
            try:
                if compress:
                    copy_runs_compressed(top, out, runs, stats, progress, zero_runs="zero" if backing_file else "skip")
                else:
                    copy_runs(top, out, runs, zero_runs="zero" if backing_file else "skip", stats=stats,
                              progress=progress)
            finally:
                top.backing = saved_backing
    return ConvertResult(True, dest, plan.required, plan.bytes_to_copy, stats.bytes_written, plan.compressed,
                         time.time() - started)


def _zeros_past(runs: list[Run], end: int) -> list[Run]:
    """A backing file outside the source's chain: what the source read past its own backing file's end (or
    everywhere, without one) is zeros, which must mask the new backing file (qemu-img convert -B does so)."""
    out = []
    for start, stop, kind in runs:
        if kind == RUN_BELOW and stop > end:
            if start < end:
                out.append((start, end, kind))
            out.append((max(start, end), stop, RUN_ZERO))
        else:
            out.append((start, stop, kind))
    return out

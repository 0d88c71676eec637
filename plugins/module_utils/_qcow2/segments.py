# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""What a run of layers (a chain from its top down to, not including, a stop image) decides by itself.

Commit copies what the layers above the base decide; flatten copies what the whole chain decides;
an in-chain rebase copies what the dropped layers decide. Metadata answers all three, without reading
guest data. Iterative, so a 1000-deep chain does not hit Python's recursion limit.
"""

from __future__ import annotations

import typing

from .image import COMP, DATA, UNALLOC, ZERO

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import Image

# Run kinds
RUN_DATA = "data"  # the layers hold data (possibly compressed) here
RUN_ZERO = "zero"  # the layers say zeros (zero clusters, or past the end of a shorter layer)
RUN_BELOW = "below"  # no layer of the run decides: the stop image (or zeros when there is none) shows through

Run = typing.Tuple[int, int, str]  # (start, end, RUN_* kind) of guest bytes


def layer_runs(top: Image, stop: Image | None, offset: int, length: int) -> list[Run]:
    """Sorted (start, end, kind) covering [offset, offset+length) as decided by layers top..above stop."""
    out = []
    pending = [(top, offset, offset + length)]
    while pending:
        layer, start, end = pending.pop()
        if layer is stop or layer is None:
            _add(out, start, end, RUN_BELOW if layer is stop else RUN_ZERO)
            continue
        if start >= layer.size:
            _add(out, start, end, RUN_ZERO)  # past a shorter layer the guest reads zeros
            continue
        inside = min(end, layer.size)
        if inside < end:
            _add(out, inside, end, RUN_ZERO)
        for ext in layer.extents(start, inside - start):
            if ext.kind in (DATA, COMP):
                _add(out, ext.offset, ext.end, RUN_DATA)
            elif ext.kind == ZERO:
                _add(out, ext.offset, ext.end, RUN_ZERO)
            elif ext.kind == UNALLOC:
                if layer.backing is None:
                    _add(out, ext.offset, ext.end, RUN_BELOW if stop is None else RUN_ZERO)
                else:
                    pending.append((layer.backing, ext.offset, ext.end))
    out.sort()
    return _merge(out)


def decides_any(layer: Image, step: int = 512 << 20) -> bool:
    """True if the layer decides any guest range by itself (data or zero clusters): whether layer_runs of it alone
    would find a run that is not RUN_BELOW, found without listing them all (it stops at the first)."""
    for pos in range(0, layer.size, step):
        if any(ext.kind != UNALLOC for ext in layer.extents(pos, step)):
            return True
    return False


def _add(out: list[Run], start: int, end: int, kind: str) -> None:
    if end > start:
        out.append((start, end, kind))


def _merge(runs: list[Run]) -> list[Run]:
    merged = []
    for start, end, kind in runs:
        if merged and merged[-1][2] == kind and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end, kind)
        else:
            merged.append((start, end, kind))
    return merged


def data_bytes(runs: typing.Iterable[Run]) -> int:
    return sum(end - start for start, end, kind in runs if kind == RUN_DATA)


def sweep(*run_lists: list[Run]) -> typing.Iterator[tuple[int, int, tuple[str | None, ...]]]:
    """Walk several sorted run lists together: yields (start, end, (kind per list or None))."""
    points = set()
    for runs in run_lists:
        for start, end, kind in runs:
            points.add(start)
            points.add(end)
    bounds = sorted(points)
    cursors = [0] * len(run_lists)
    for a, b in zip(bounds, bounds[1:]):
        kinds = []
        for i, runs in enumerate(run_lists):
            while cursors[i] < len(runs) and runs[cursors[i]][1] <= a:
                cursors[i] += 1
            run = runs[cursors[i]] if cursors[i] < len(runs) else None
            kinds.append(run[2] if run is not None and run[0] <= a < run[1] else None)
        yield a, b, tuple(kinds)

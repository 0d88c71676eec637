# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""A per-cluster reference counter sized by the file, sparse when the file is huge."""

from __future__ import annotations

from array import array

DENSE_LIMIT = 8 << 20  # clusters; above this a dict keeps memory bounded for sparse hostile files


class RefMap:
    def __init__(self, nb_clusters):
        self.nb_clusters = nb_clusters
        if nb_clusters <= DENSE_LIMIT:
            self._dense = array("I", bytes(4 * nb_clusters))
            self._sparse = None
        else:
            self._dense = None
            self._sparse = {}

    def get(self, cluster):
        if self._dense is not None:
            return self._dense[cluster] if cluster < len(self._dense) else 0
        return self._sparse.get(cluster, 0)

    def inc(self, cluster, n=1):
        if self._dense is not None:
            if cluster >= len(self._dense):
                self._dense.extend([0] * (cluster + 1 - len(self._dense)))
            self._dense[cluster] += n
            return self._dense[cluster]
        value = self._sparse.get(cluster, 0) + n
        self._sparse[cluster] = value
        return value

    def set(self, cluster, value):
        if self._dense is not None:
            if cluster >= len(self._dense):
                self._dense.extend([0] * (cluster + 1 - len(self._dense)))
            self._dense[cluster] = value
        elif value:
            self._sparse[cluster] = value
        else:
            self._sparse.pop(cluster, None)

    @property
    def size(self):
        """One past the highest cluster that may be non-zero."""
        if self._dense is not None:
            return len(self._dense)
        return max(self._sparse) + 1 if self._sparse else 0

    def highest_nonzero(self):
        if self._dense is not None:
            raw = self._dense.tobytes().rstrip(b"\0")
            return (len(raw) - 1) // 4 if raw else -1
        return max((k for k, v in self._sparse.items() if v), default=-1)

    def slice(self, start, end):
        """Counts for clusters [start, end) as an array('I')."""
        if self._dense is not None:
            part = self._dense[start:end]
            if len(part) < end - start:
                part.extend([0] * (end - start - len(part)))
            return part
        out = array("I", bytes(4 * (end - start)))
        for k, v in self._sparse_items(start, end):
            out[k - start] = v
        return out

    def any_in(self, start, end):
        if self._dense is not None:
            return bool(self._dense[start:end].tobytes().strip(b"\0"))
        return any(v for _k, v in self._sparse_items(start, end))

    def _sparse_items(self, start, end):
        """(cluster, count) pairs in [start, end), walking whichever is smaller: the range or the dict."""
        if end - start < len(self._sparse):
            get = self._sparse.get
            return [(k, get(k)) for k in range(start, end) if get(k)]
        return [(k, v) for k, v in self._sparse.items() if start <= k < end and v]

    def used_groups(self, bits):
        """Sorted g such that some cluster in [g << bits, (g + 1) << bits) has a non-zero count."""
        if self._dense is not None:
            step = 1 << bits
            return [g for g in range(-(-len(self._dense) // step)) if self.any_in(g * step, (g + 1) * step)]
        return sorted({k >> bits for k, v in self._sparse.items() if v})

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""A bounded write-back cache of metadata units (L2 slices, refcount blocks).

Dirty entries are never dropped: when only dirty entries could be evicted, the owner's ordered flush
runs first (data, then refcounts, then L2, then L1), exactly as qemu flushes a cache with dependencies.
"""

from __future__ import annotations

import typing

from collections import OrderedDict


class MetadataCache:
    def __init__(self, max_entries: int, load: typing.Callable[[int], typing.Any],
                 store: typing.Callable[[int, typing.Any], None], flush_all: typing.Callable[[], None]) -> None:
        self.max_entries = max(2, max_entries)
        self._load = load  # key -> value
        self._store = store  # (key, value) -> None, writes one entry
        self._flush_all = flush_all  # runs the image's ordered flush
        self._entries = OrderedDict()
        self._dirty = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: int) -> typing.Any:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
            return value
        self._make_room()
        value = self._load(key)
        self._entries[key] = value
        return value

    def put_new(self, key: int, value: typing.Any) -> None:
        """Insert a freshly made entry (e.g. a new L2 slice) as dirty."""
        self._make_room()
        self._entries[key] = value
        self._entries.move_to_end(key)
        self._dirty.add(key)

    def put_clean(self, key: int, value: typing.Any) -> None:
        """Insert an entry that is already on disk."""
        self._make_room()
        self._entries[key] = value
        self._entries.move_to_end(key)

    def mark_dirty(self, key: int) -> None:
        self._dirty.add(key)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def write_dirty(self) -> None:
        for key in sorted(self._dirty):
            value = self._entries.get(key)
            if value is not None:
                self._store(key, value)
        self._dirty.clear()

    def drop(self, key: int) -> None:
        """Forget an entry (its cluster was freed or replaced)."""
        self._entries.pop(key, None)
        self._dirty.discard(key)

    def clear(self) -> None:
        self._entries.clear()
        self._dirty.clear()

    def _make_room(self) -> None:
        while len(self._entries) >= self.max_entries:
            victim = next((k for k in self._entries if k not in self._dirty), None)
            if victim is None:
                self._flush_all()
                victim = next((k for k in self._entries if k not in self._dirty), None)
                if victim is None:  # flush could not clean (read-only); grow rather than lose data
                    return
            del self._entries[victim]

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Refcount blocks of every width qcow2 allows (1 to 64 bits per entry).

Widths of 8 bits and more are arrays of native integers; narrower widths stay packed in a bytearray,
entry i at bits (i * width) % 8 of byte (i * width) // 8, counted from the least significant bit.
"""

from __future__ import annotations

from array import array

from ..layout import LITTLE_ENDIAN_HOST

_TYPECODES = {8: "B", 16: "H", 32: "I", 64: "Q"}


class RefBlockCodec:
    """Decode, encode and index refcount blocks of one width."""

    def __init__(self, refcount_bits: int, entries: int) -> None:
        self.bits = refcount_bits
        self.entries = entries
        self.typecode = _TYPECODES.get(refcount_bits)
        if self.typecode and array(self.typecode).itemsize * 8 != refcount_bits:
            raise RuntimeError("array typecode %s is not %d bits here" % (self.typecode, refcount_bits))
        self.packed = self.typecode is None
        self.mask = (1 << refcount_bits) - 1
        self.per_byte = 8 // refcount_bits if self.packed else 0
        if self.packed:
            # byte value -> 1 if it holds a zero entry / a non-zero entry: lets bytes.find() do the scanning
            fields = [[(b >> (i * refcount_bits)) & self.mask for i in range(self.per_byte)] for b in range(256)]
            self._has_free = bytes(1 if 0 in f else 0 for f in fields)
            self._has_used = bytes(1 if any(f) else 0 for f in fields)

    def empty(self) -> array.array:
        if self.packed:
            return bytearray(self.entries * self.bits // 8)
        return array(self.typecode, bytes(self.entries * self.bits // 8))

    def decode(self, raw: bytes) -> array.array | bytearray:
        need = self.entries * self.bits // 8
        if len(raw) < need:
            raw = bytes(raw) + bytes(need - len(raw))
        if self.packed:
            return bytearray(raw[:need])
        block = array(self.typecode)
        block.frombytes(raw[:need])
        if LITTLE_ENDIAN_HOST and block.itemsize > 1:
            block.byteswap()
        return block

    def encode(self, block: array.array) -> bytes:
        if self.packed:
            return bytes(block)
        if LITTLE_ENDIAN_HOST and block.itemsize > 1:
            swapped = array(block.typecode, block)
            swapped.byteswap()
            return swapped.tobytes()
        return block.tobytes()

    def get(self, block: bytearray | array.array, index: int) -> int:
        if not self.packed:
            return block[index]
        shift = (index % self.per_byte) * self.bits
        return (block[index // self.per_byte] >> shift) & self.mask

    def set(self, block: array.array | bytearray, index: int, value: int) -> None:
        if not self.packed:
            block[index] = value
            return
        pos = index // self.per_byte
        shift = (index % self.per_byte) * self.bits
        block[pos] = (block[pos] & ~(self.mask << shift) & 0xFF) | (value << shift)

    def _packed_find(self, block: bytearray, start: int, flags: bytes, want_zero: bool, end: int | None = None) -> int | None:
        """First index in [start, end) whose entry is zero (want_zero) or non-zero, in a packed block."""
        end = self.entries if end is None else end
        per_byte = self.per_byte
        first_byte = start // per_byte
        for i in range(start, min(end, (first_byte + 1) * per_byte)):
            if (self.get(block, i) == 0) == want_zero:
                return i
        pos = bytes(block[first_byte + 1:(end + per_byte - 1) // per_byte]).translate(flags).find(1)
        if pos < 0:
            return None
        pos += first_byte + 1
        for i in range(pos * per_byte, min(end, (pos + 1) * per_byte)):
            if (self.get(block, i) == 0) == want_zero:
                return i
        return None  # the wanted entry of the last byte lies past end

    def first_free(self, block: bytearray | array.array, start: int) -> int | None:
        """First index >= start whose refcount is 0, or None."""
        if start < self.entries and not self.packed and block[start] == 0:
            return start  # the usual case: the allocation hint points at a free cluster
        if self.packed:
            return self._packed_find(block, start, self._has_free, True)
        width = block.itemsize
        raw = block.tobytes()
        zero = bytes(width)
        pos = start * width
        while True:
            pos = raw.find(zero, pos)
            if pos < 0:
                return None
            if pos % width == 0:
                return pos // width
            pos += width - pos % width

    def first_used(self, block: bytearray | array.array, start: int, stop: int | None = None) -> int | None:
        """First index in [start, stop) whose refcount is not 0, or None."""
        stop = self.entries if stop is None else min(stop, self.entries)
        if self.packed:
            return self._packed_find(block, start, self._has_used, False, stop)
        width = block.itemsize
        raw = block[start:stop].tobytes()
        rest = raw.lstrip(b"\0")
        if not rest:
            return None
        return start + (len(raw) - len(rest)) // width

    def used_count(self, block: bytearray | array.array) -> int:
        if self.packed:
            return sum(1 for i in range(self.entries) if self.get(block, i))
        return self.entries - block.count(0)

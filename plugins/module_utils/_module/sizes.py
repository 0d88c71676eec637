# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Sizes as users write them: bytes, or a number with a qemu-img style binary suffix (10G, 512M, 1.5T)."""

from __future__ import annotations

import re

from ansible.module_utils.common.text.formatters import human_to_bytes

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError

# human_to_bytes knows K/KB..E/EB; qemu-img users also write KiB..EiB, which mean the same here.
_IEC = re.compile(r"^\s*([0-9.]+)\s*([KMGTPE])iB\s*$", re.IGNORECASE)


def parse_size(value, option="size"):
    """Bytes as an int; K, M, G, T, P, E are powers of 1024 as in qemu-img. None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgumentError("%s must be a number of bytes or a size like 10G, not %r" % (option, value))
    if isinstance(value, int):
        size = value
    else:
        text = str(value).strip()
        match = _IEC.match(text)
        if match:
            text = match.group(1) + match.group(2)
        try:
            size = human_to_bytes(text)
        except ValueError:
            raise InvalidArgumentError("%s: cannot read %r as a size; give bytes or a number with K, M, G, T, P or E "
                                       "(powers of 1024, as qemu-img reads them)" % (option, value)) from None
    if size < 0:
        raise InvalidArgumentError("%s must not be negative (got %r)" % (option, value))
    return size

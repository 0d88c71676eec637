# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Properties an existing image can change in place (qemu-img amend): lazy_refcounts."""

from __future__ import annotations

import typing

from . import constants as C
from .errors import InvalidArgumentError
from .header import OFFSET_COMPAT

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .image import Qcow2Image


def set_lazy_refcounts(img: Qcow2Image, enabled: bool) -> None:
    """Set or clear the lazy_refcounts compatible feature bit of a writable image with one header write.

    Opening writable takes qemu's writer lock and repairs an image left dirty (its refcounts may be stale
    while lazy refcounts were on), so clearing the bit never leaves stale refcounts behind.
    """
    hdr = img.header
    if hdr.version < 3:
        raise InvalidArgumentError("Lazy refcounts need compat 1.1; %s has compat %s" % (img.path, hdr.compat), img.path)
    if enabled:
        features = hdr.compatible_features | C.COMPAT_LAZY_REFCOUNTS
    else:
        features = hdr.compatible_features & ~C.COMPAT_LAZY_REFCOUNTS
    if features != hdr.compatible_features:
        img.write_header_bytes(OFFSET_COMPAT, features.to_bytes(8, "big"))
        hdr.compatible_features = features

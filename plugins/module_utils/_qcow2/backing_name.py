# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Rewriting an image's backing reference (name and format) in its header."""

from __future__ import annotations

import os
import typing

from .errors import FormatError

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .image import Qcow2Image


def name_for(overlay_path: str, target_path: str, like_name: str | None) -> str:
    """The backing name to store: relative to the overlay's directory if the name it replaces was relative."""
    if like_name and not os.path.isabs(like_name):
        return os.path.relpath(os.path.abspath(target_path), os.path.dirname(os.path.abspath(overlay_path)))
    return os.path.abspath(target_path)


def set_backing(img: Qcow2Image, name: str | None, fmt: str | None) -> None:
    """Point a writable qcow2 image at another backing file (None/"" = none); one header write."""
    hdr = img.header.copy()
    hdr.backing_file = name or None
    hdr.backing_format = fmt if name else None
    try:
        hdr.build()
    except FormatError as exc:
        raise FormatError("Cannot record backing file %r in %s: %s" % (name, img.path, exc), img.path, exc.field) from None
    img.header = hdr
    img.rewrite_header()

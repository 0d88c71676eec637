# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Typed errors of the engine. Every failure a user can cause ends in one of these, never a traceback."""

from __future__ import annotations


class Qcow2Error(Exception):
    """Base class: ``str(err)`` is a message a person can act on."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class FormatError(Qcow2Error):
    """The file is not a valid qcow2 image; ``field`` names the offending field."""

    def __init__(self, message: str, path: str | None = None, field: str | None = None) -> None:
        super().__init__(message, path)
        self.field = field


class NotQcow2Error(FormatError):
    """The file is not a qcow2 image at all: qemu would read it as raw data (``image_format``)."""

    image_format = "raw"


class UnsupportedError(Qcow2Error):
    """A valid image uses something the engine refuses (unknown incompatible feature, encryption...)."""


class ImageLockedError(Qcow2Error):
    """Another process (a running qemu, qemu-img, another task) holds a conflicting lock."""


class ReadOnlyError(Qcow2Error):
    """A write was attempted on an image opened read-only or marked corrupt."""


class BackingChainError(Qcow2Error):
    """The backing chain cannot be opened: missing file, loop, too deep, format mismatch."""


class UnsafeBackingError(BackingChainError):
    """A backing reference was refused by policy (json:/protocol names, outside allowed dirs, data file)."""


class NoSpaceError(Qcow2Error):
    """The target filesystem cannot hold the data."""


class InvalidArgumentError(Qcow2Error):
    """A caller passed a value the operation cannot use."""


class CorruptionError(Qcow2Error):
    """Metadata read during an operation is inconsistent (refcount overflow, overlapping tables...)."""


class MissingDependencyError(Qcow2Error):
    """An optional Python library is needed; ``library`` names it for missing_required_lib()."""

    def __init__(self, message: str, library: str, import_error: str | None = None) -> None:
        super().__init__(message)
        self.library = library
        self.import_error = import_error


class BitmapUnusableError(Qcow2Error):
    """A persistent bitmap cannot be used: missing, inconsistent (in use, stale), disabled, or its chain broken.
    ``bitmap`` names it, ``reason`` says why (for a backup to fall back to a full copy and report it)."""

    def __init__(self, message, path=None, bitmap=None, reason=None):
        super().__init__(message, path)
        self.bitmap = bitmap
        self.reason = reason

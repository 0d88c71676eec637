# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""File-level helpers: identity, build-beside-then-rename, and holding qemu's write lock around a change."""

from __future__ import annotations

import binascii
import contextlib
import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import locking
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import resolve_backing_path
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import ImageLockedError, InvalidArgumentError


def file_identity(path):
    """(device, inode) of the file path names, following symlinks; None if it does not exist."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino)


def same_file(first, second):
    """True when both paths exist and name the same file (any spelling, links included)."""
    ident = file_identity(first)
    return ident is not None and ident == file_identity(second)


def backing_is(image_path, stored_name, wanted):
    """Does a backing name stored in image_path's header name the file ``wanted`` (relative to image_path)?"""
    if stored_name is None:
        return False
    if stored_name == wanted:
        return True
    return same_file(resolve_backing_path(image_path, stored_name), resolve_backing_path(image_path, wanted))


def require_parent_directory(path):
    """A clear error instead of the engine's 'No such file' when the image's directory is missing."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InvalidArgumentError("Cannot create %s: directory %s does not exist" % (path, parent), path)


def remove_stale_temporaries(path):
    """Delete what an interrupted earlier build of path left beside it: the module's .NAME.TOKEN.tmp and the
    engine's ..NAME.TOKEN.tmp.XXXXXX.tmp inside that, unless a live run still holds one locked."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not entry.endswith(".tmp") or not (entry.startswith("." + name + ".") or entry.startswith(".." + name + ".")):
            continue
        stale = os.path.join(directory, entry)
        try:
            if os.path.isfile(stale) and not os.path.islink(stale) and locking.holders_conflict(stale, True) is None:
                os.unlink(stale)
        except OSError:
            continue


def temp_path_beside(path):
    """A fresh hidden name in path's directory: an image built there is renamed over path without copying,
    and a relative backing name resolves the same for both."""
    directory, name = os.path.split(os.path.abspath(path))
    token = binascii.hexlify(os.urandom(4)).decode("ascii")
    return os.path.join(directory, ".%s.%s.tmp" % (name, token))


@contextlib.contextmanager
def locked(path, write=True):
    """Hold qemu's writer (or reader) lock on path for a change made around the engine's own opens.

    ImageLockedError with qemu's message when a VM has the image open in a conflicting way. A reader lock
    still lets other readers in but keeps writers (a VM starting on the image) out.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        locking.acquire(fd, path, write)
        try:
            yield
        finally:
            locking.release(fd)
    finally:
        os.close(fd)


def refuse_if_locked(path, write=True):
    """ImageLockedError with qemu's message if another process holds path in a way a writer (or reader)
    conflicts with; planning uses it so that check mode fails where the real run would."""
    conflict = locking.holders_conflict(path, write)
    if conflict:
        raise ImageLockedError(conflict, path)

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""One operation on a store at a time: backup, merge, restore and verify all take the store lock.

The lock is flock() on <store>/.lock, so the kernel drops it when its holder dies (a SIGKILL leaves no stale
lock). Once it holds the lock a run writes who it is (operation, pid, start time) into the same file, so a
second run that finds the lock taken can say which run holds it instead of waiting or failing vaguely.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import typing

from .manifest import StoreError

LOCK = ".lock"


@contextlib.contextmanager
def store_lock(store: str, operation: str) -> typing.Iterator[None]:
    """Hold the store's lock for the block; StoreError naming the holder when another run has it."""
    if not os.path.isdir(store):
        raise StoreError("%s is not a backup store (there is no such directory)" % store, store)
    fd = os.open(os.path.join(store, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError("The backup store %s is busy: %s. Only one backup, merge, restore or verify runs on a "
                             "store at a time; try again when it has finished" % (store, _holder(fd)), store) from None
        record = {"operation": operation, "pid": os.getpid(),
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: nobody to name
    finally:
        os.close(fd)  # closing drops the flock


def _holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return "a %s (pid %s) started at %s holds it" % (record["operation"], record["pid"], record["started"])
    except (ValueError, KeyError, OSError):
        return "another run holds it (it has not said which yet)"

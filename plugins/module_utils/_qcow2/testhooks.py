# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Test-only fault hooks on the engine's I/O, read from the environment once at import.

fileio calls io_event() before every write, truncate and flush it issues. A crash test sets
BACKINGCHAIN_QCOW2_CRASH_AT=N to have the process SIGKILL itself at the Nth of them and then checks
what is on disk; a race test sets BACKINGCHAIN_QCOW2_IO_HOLD=path to hold every event while that file
exists, so that the test decides when the operation may go on, however fast it is. Unset, both cost
one counter increment per event.
"""

from __future__ import annotations

import os
import time

_io_events = 0
_crash_at = int(os.environ.get("BACKINGCHAIN_QCOW2_CRASH_AT", "0") or 0)
_io_hold = os.environ.get("BACKINGCHAIN_QCOW2_IO_HOLD", "")


def io_event_count() -> int:
    """Number of writes, truncates and flushes issued so far by this process."""
    return _io_events


def set_crash_at(n: int) -> None:
    """Kill the process (SIGKILL) when the Nth write/flush is about to be issued; 0 disables."""
    global _crash_at
    _crash_at = n


def io_event() -> None:
    """Count one write, truncate or flush about to be issued; wait or die there if a test asked for it."""
    global _io_events
    _io_events += 1
    while _io_hold and os.path.exists(_io_hold):
        time.sleep(0.01)
    if _crash_at and _io_events >= _crash_at:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)

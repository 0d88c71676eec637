"""Bounds for tests that guard against hangs: fail instead of waiting forever."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def time_limit(seconds):
    """Raise TimeoutError in the block once ``seconds`` (an int) have passed (main thread, Unix)."""
    def _expired(signum, frame):
        raise TimeoutError('still running after %d s' % seconds)

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def examples(default):
    """Hypothesis example count for a long interop property: INTEROP_EXAMPLES overrides the CI default."""
    import os
    return int(os.environ.get('INTEROP_EXAMPLES') or default)


def crash_points(total, budget=24):
    """The I/O events (numbered 1..total) a crash sweep kills an operation at.

    CRASH_POINTS=all: every one (the exhaustive sweep, scripts/crash-sweep.sh). Otherwise at most CRASH_POINTS
    (default ``budget``): the first 4 and the last 8, where an operation creates, switches and syncs its metadata,
    and the rest spread evenly over the events between, which are mostly data and table writes of the same kind.
    """
    import os
    wanted = os.environ.get('CRASH_POINTS') or str(budget)
    if wanted == 'all' or total <= int(wanted):
        return list(range(1, total + 1))
    count = max(int(wanted), 12)
    head, tail = list(range(1, 5)), list(range(total - 7, total + 1))
    middle = count - len(head) - len(tail)
    low, high = head[-1] + 1, tail[0] - 1  # the events between head and tail
    spread = [low + (high - low) * i // max(middle - 1, 1) for i in range(middle)]
    return sorted(set(head + spread + tail))


def record_crash_points(record_property, points, total):
    """Report a sweep's crash points to the interop summary: how many were tried, of how many I/O events."""
    record_property('crash_points', len(points))
    record_property('crash_events', total)

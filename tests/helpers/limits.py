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

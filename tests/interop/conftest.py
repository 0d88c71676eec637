"""Fixtures of the interop tests, and the figures they report, printed after the run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SMALL_FS_BYTES = 24 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path):
    """A directory on a small filesystem of its own: a loop-mounted ext4 image, else a size-limited tmpfs.

    Mounting needs root (the test machines run the suite as root); without
    it the test fails and says so instead of silently skipping.
    """
    if os.geteuid() != 0:
        pytest.fail('the no-space tests mount a small filesystem and need root (run the interop stage as root)')
    mnt = tmp_path / 'small-fs'
    mnt.mkdir()
    backing = tmp_path / 'small-fs.ext4'
    with open(backing, 'wb') as f:
        f.truncate(SMALL_FS_BYTES)
    attempts = [
        (['mkfs.ext4', '-q', '-F', '-m', '0', str(backing)], ['mount', '-o', 'loop', str(backing), str(mnt)]),
        (None, ['mount', '-t', 'tmpfs', '-o', 'size=%d' % SMALL_FS_BYTES, 'tmpfs', str(mnt)]),
    ]
    errors = []
    for mkfs, mount in attempts:
        if mkfs:
            made = subprocess.run(mkfs, capture_output=True, text=True, check=False)
            if made.returncode:
                errors.append(made.stderr)
                continue
        mounted = subprocess.run(mount, capture_output=True, text=True, check=False)
        if mounted.returncode == 0:
            break
        errors.append(mounted.stderr)
    else:
        pytest.fail('could not mount a small filesystem: %s' % ' / '.join(e.strip() for e in errors))
    try:
        yield mnt
    finally:
        subprocess.run(['umount', str(mnt)], check=False)


_CRASH_POINTS: list[tuple[str, int, int | None]] = []  # (test, points tried, I/O events of the sweep)
_FIGURES: list = []  # (topic, {name: value}) from record_property('interop_figures', ...)


def pytest_runtest_logreport(report):
    """Collect the crash points and figures tests report (record_property, which also reaches the xdist controller)."""
    if report.when == 'call' and report.passed:
        properties = dict(report.user_properties)
        if 'crash_points' in properties:
            _CRASH_POINTS.append((report.nodeid, properties['crash_points'], properties.get('crash_events')))
        _FIGURES.extend(value for key, value in report.user_properties if key == 'interop_figures')


def pytest_terminal_summary(terminalreporter):
    if _CRASH_POINTS:
        terminalreporter.section('crash points tried')
        for nodeid, count, events in sorted(_CRASH_POINTS, key=lambda c: c[0]):
            of = ' of %4d' % events if events else ' ' * 8
            terminalreporter.write_line('%5d%s  %s' % (count, of, nodeid.split('::', 1)[-1]))
        terminalreporter.write_line('%5d%s  in total' % (sum(c[1] for c in _CRASH_POINTS), ' ' * 8))
        if any(events and events > count for _nodeid, count, events in _CRASH_POINTS):
            terminalreporter.write_line('(a sample of each sweep\'s I/O events; CRASH_POINTS=all, or scripts/crash-sweep.sh, '
                                        'tries every one)')
    if _FIGURES:
        terminalreporter.section('interop figures')
        for topic, figures in sorted(_FIGURES, key=lambda f: (f[0], sorted(f[1].items()))):
            terminalreporter.write_line('%s: %s' % (topic, ', '.join('%s=%s' % kv for kv in sorted(figures.items()))))

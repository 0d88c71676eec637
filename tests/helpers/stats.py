"""Figures the interop tests measure (case counts, crash points, RSS), printed at the end of the run.

Tests call record(); tests/interop/conftest.py prints every recorded line in
pytest's terminal summary, also under pytest-xdist (workers append to one file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

STATS_FILE = Path(__file__).resolve().parents[1] / 'output' / 'interop-stats.jsonl'


def reset() -> None:
    STATS_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATS_FILE.write_text('')


def record(topic: str, **figures) -> None:
    """Append one line of figures under a topic (e.g. record('crash', config='4k', points=40))."""
    STATS_FILE.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({'topic': topic, **figures}, sort_keys=True) + '\n'
    fd = os.open(str(STATS_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines from parallel workers do not mix
    finally:
        os.close(fd)


def load() -> list:
    if not STATS_FILE.exists():
        return []
    return [json.loads(line) for line in STATS_FILE.read_text().splitlines() if line.strip()]

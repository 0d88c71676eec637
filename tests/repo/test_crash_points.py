"""The crash sweeps' sample of I/O events (tests/helpers/limits.py): every event when there are few or when
CRASH_POINTS=all, otherwise the first 4, the last 8 and the rest spread between, never more than the budget."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.tests.helpers.limits import crash_points


def test_few_events_are_all_tried(monkeypatch):
    monkeypatch.delenv('CRASH_POINTS', raising=False)
    assert crash_points(24) == list(range(1, 25))
    assert crash_points(5, budget=60) == [1, 2, 3, 4, 5]


def test_many_events_are_sampled_at_both_ends_and_between(monkeypatch):
    monkeypatch.delenv('CRASH_POINTS', raising=False)
    for total, budget in ((90, 24), (1000, 24), (82, 60), (25, 24)):
        points = crash_points(total, budget)
        assert len(points) <= budget and points == sorted(set(points))
        assert points[:4] == [1, 2, 3, 4] and points[-8:] == list(range(total - 7, total + 1))
        assert all(1 <= p <= total for p in points)
    middle = crash_points(1000, 24)[4:-8]
    assert len(middle) == 12 and middle[-1] - middle[0] > 900  # spread over the events between, not bunched


def test_crash_points_all_tries_every_event(monkeypatch):
    monkeypatch.setenv('CRASH_POINTS', 'all')
    assert crash_points(90) == list(range(1, 91))
    monkeypatch.setenv('CRASH_POINTS', '40')
    assert len(crash_points(90)) == 40

"""Interop suite: prints the figures the tests recorded (tests/helpers/stats.py) after the run."""

from __future__ import annotations

import collections

from ansible_collections.backingchain.qcow2.tests.helpers import stats


def pytest_sessionstart(session):
    if not hasattr(session.config, 'workerinput'):  # the controller (or a run without xdist)
        stats.reset()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, 'workerinput'):
        return
    by_topic = collections.defaultdict(list)
    for line in stats.load():
        by_topic[line.pop('topic')].append(line)
    if not by_topic:
        return
    terminalreporter.section('interop figures')
    for topic in sorted(by_topic):
        for figures in sorted(by_topic[topic], key=lambda f: sorted(f.items())):
            terminalreporter.write_line('%s: %s' % (topic, ', '.join('%s=%s' % kv for kv in sorted(figures.items()))))

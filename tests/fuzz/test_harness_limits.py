"""The fuzz harness's limits fire: a case that spins, blocks or hoards memory is a failure, never a pass.

A fake CaseRun.run stands in for the engine, so each limit is seen to work on its own.
"""

from __future__ import annotations

import gc
import mmap
import sys
import time

import pytest

from ansible_collections.backingchain.qcow2.tests.fuzz import harness


def _case(tmp_path):
    case_dir = str(tmp_path / 'case')
    harness.prepare_case(case_dir, {'top.qcow2': b'not an image'})
    return case_dir


def _fake_run(body):
    def run(self, write_side=True):  # pylint: disable=unused-argument
        body()
        return {'steps': [('fake', 'ok')], 'failure': None, 'digest': None, 'size': None, 'case_rss': None}
    return run


def _spin():
    while True:
        pass


def test_a_case_spinning_past_its_cpu_time_is_a_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(harness.CaseRun, 'run', _fake_run(_spin))
    monkeypatch.setattr(harness, 'TIMEOUT', 1.0)  # read in the child: RLIMIT_CPU of 1 s
    started = time.monotonic()
    result = harness.run_isolated(_case(tmp_path), 0, cpu_timeout=1.0)
    assert result['failure']['kind'] == 'timeout', result
    assert 'of CPU' in result['failure']['error']
    assert result['cpu_seconds'] > 0.5  # rusage is counted in ticks: SIGXCPU may come at 0.9x s
    assert time.monotonic() - started < 30


def test_a_case_blocking_without_cpu_hits_the_wall_clock_backstop(tmp_path, monkeypatch):
    monkeypatch.setattr(harness.CaseRun, 'run', _fake_run(lambda: time.sleep(30)))
    result = harness.run_isolated(_case(tmp_path), 0, timeout=1.0)
    assert result['failure']['kind'] == 'timeout', result
    assert 'no result after 1.0 s' in result['failure']['error']
    assert result['seconds'] < 10


@pytest.mark.parametrize('parent_mapped_mib', [0, 400])
def test_a_case_hoarding_memory_is_a_failure(tmp_path, monkeypatch, parent_mapped_mib):
    """Also when the process running the cases already maps a lot (an xdist worker keeps the malloc arenas and
    stacks of earlier tests' threads): the case's own allocations are what is limited."""
    mapped = mmap.mmap(-1, parent_mapped_mib << 20) if parent_mapped_mib else None  # address space, no RSS
    hoard = []

    def grab():
        for _i in range(40):  # 320 MiB in 8 MiB steps: past RSS_LIMIT, under the 512 MiB of address space a case may add
            hoard.append(bytearray(8 << 20))

    monkeypatch.setattr(harness.CaseRun, 'run', _fake_run(grab))
    result = harness.run_isolated(_case(tmp_path), 0)
    assert result['failure'] is not None and result['failure']['kind'] == 'memory', result
    if mapped is not None:
        mapped.close()


def test_a_quick_case_passes_and_reports_its_cpu_time(tmp_path, monkeypatch):
    monkeypatch.setattr(harness.CaseRun, 'run', _fake_run(lambda: time.sleep(0.2)))
    result = harness.run_isolated(_case(tmp_path), 0)
    assert result['failure'] is None, result
    assert 0 <= result['cpu_seconds'] < harness.TIMEOUT


def test_a_quick_case_in_a_large_worker_is_not_charged_for_the_worker_s_memory(tmp_path, monkeypatch):
    """An xdist worker can hold a few hundred MiB; the child shares it, but only what the case adds is its own."""
    held = b'\x01' * (300 << 20)  # resident: every page written
    monkeypatch.setattr(harness.CaseRun, 'run', _fake_run(lambda: None))
    result = harness.run_isolated(_case(tmp_path), 0)
    assert result['failure'] is None, result
    assert result['rss_mib'] < 64, result
    del held


def test_a_case_runs_without_the_tracer_of_the_process_that_forked_it(tmp_path, monkeypatch):
    """Hypothesis traces every line while it shrinks a failure; a traced case runs many times slower."""
    def untraced():
        if sys.gettrace() is not None or sys.getprofile() is not None:
            raise AssertionError('the case runs under the forking process\'s tracer')

    def tracer(_frame, _event, _arg):
        return tracer

    monkeypatch.setattr(harness.CaseRun, 'run', _fake_run(untraced))
    sys.settrace(tracer)
    try:
        result = harness.run_isolated(_case(tmp_path), 0)
    finally:
        sys.settrace(None)
    assert result['failure'] is None, result


def test_a_case_leaves_the_objects_it_inherits_to_the_garbage_collector_frozen(tmp_path, monkeypatch):
    """The forking worker's objects are frozen in the case's child: collections there never walk them."""
    def frozen():
        if gc.get_freeze_count() == 0:
            raise AssertionError('the inherited objects are not frozen')

    monkeypatch.setattr(harness.CaseRun, 'run', _fake_run(frozen))
    result = harness.run_isolated(_case(tmp_path), 0)
    assert result['failure'] is None, result
    assert gc.get_freeze_count() == 0  # the worker itself is left as it was

"""Every input that ever made the fuzzer fail, replayed: each must now end in a typed error or a correct read.

A regression archive (tests/fuzz/regressions/*.tar.xz) holds a minimized case; the harness runs the
read side and the write side in a child with the fuzzer's limits, and compares full reads with
qemu-img when both accept the image.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.tests.fuzz import harness, regressions

CASES = regressions.all_cases()


def test_regressions_exist():
    # the directory holds the inputs the fuzzer found; an empty one means they were lost
    assert CASES, 'no regression cases under %s' % regressions.REGRESSION_DIR


@pytest.mark.parametrize('archive', CASES, ids=[os.path.basename(c)[:-len('.tar.xz')] for c in CASES])
def test_regression_case(archive, tmp_path):
    files, meta = regressions.load(archive)
    assert 'top.qcow2' in files and meta.get('failure'), 'malformed regression archive'
    case_dir = str(tmp_path / 'case')
    harness.prepare_case(case_dir, files)
    result = harness.judge(case_dir, meta.get('case_seed', 0))
    assert result['failure'] is None, '%s (once: %s): %s' % (meta.get('note'), meta['failure'], result['failure'])
    outcomes = [outcome for _name, outcome in result['steps']]
    assert outcomes and 'FAILED' not in outcomes

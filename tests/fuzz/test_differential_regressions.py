"""Every input on which the engine once disagreed with qemu, judged again: it must now agree on every question.

An archive in tests/fuzz/differential_regressions/ holds one case of the differential fuzzer (a qemu-made
seed with one structure changed) and the verdicts it once got wrong. 'policy' (a refusal by the engine's
backing policy, docs/hardening.md) counts as agreement; anything else that differs from qemu fails, and where
both check, check's corruption, leak and error counts must be qemu's too.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.tests.fuzz import differential, diffrun, harness, regressions

CASES = diffrun.all_regressions()


def test_differential_regressions_exist():
    assert CASES, 'no differential regression cases under %s' % diffrun.REGRESSION_DIR


@pytest.mark.parametrize('archive', CASES, ids=[os.path.basename(c)[:-len('.tar.xz')] for c in CASES])
def test_engine_agrees_with_qemu(archive, tmp_path):
    files, meta = regressions.load(archive)
    assert 'top.qcow2' in files and meta.get('differential'), 'malformed differential regression archive'
    case_dir = str(tmp_path / 'case')
    harness.prepare_case(case_dir, files)
    result = differential.judge(case_dir)
    assert result['failure'] is None, result['failure']
    disagreeing = {q: v for q, v in result['verdict'].items() if v not in ('agree', 'policy', 'n/a')}
    if diffrun.counters_equal(result['verdict'], result['engine'], result['qemu']) is False:
        disagreeing['check counters'] = (result['engine']['check']['result'], result['qemu']['check']['result'])
    assert not disagreeing, '%s (%s; %s): %s\nengine: %s\nqemu: %s' % (
        meta['structure'], meta['mutation'], meta['note'], disagreeing, result['engine'], result['qemu'])

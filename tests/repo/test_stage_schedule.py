"""scripts/test.sh runs stages side by side, one per core, and a stage marked "runs alone" with nothing beside it.

Each test copies test.sh into a scratch repository whose stages only record when they start and end, so what is
checked is the scheduling itself: how many stages overlap, the results table and the exit status.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

STAGE = """#!/usr/bin/env bash
{marker}
{about}
echo "start $(date +%s.%N)" >>"$REPO/events/{name}"
sleep {seconds}
end=$((SECONDS + {burn}))
while ((SECONDS < end)); do :; done  # CPU time, counted in the stage's CPU column
echo "end $(date +%s.%N)" >>"$REPO/events/{name}"
echo "{name} says hello"
exit {rc}
"""


def _scratch_repo(tmp_path: Path, stages: dict[str, tuple[float, int, bool]], burn: tuple[str, ...] = (),
                  about: dict[str, int] | None = None) -> Path:
    """A repository holding test.sh, a setup.sh that does nothing, an empty venv activate script and the stages."""
    repo = tmp_path / 'repo'
    (repo / 'scripts' / 'test.d').mkdir(parents=True)
    (repo / '.venv' / 'bin').mkdir(parents=True)
    (repo / '.venv' / 'bin' / 'activate').write_text('')
    (repo / 'events').mkdir()
    shutil.copy(REPO / 'scripts' / 'test.sh', repo / 'scripts' / 'test.sh')
    (repo / 'scripts' / 'setup.sh').write_text('#!/usr/bin/env bash\n')
    os.chmod(repo / 'scripts' / 'setup.sh', 0o755)
    for name, (seconds, rc, alone) in stages.items():
        marker = '# test.sh: runs alone (for the test)' if alone else '# a stage'
        (repo / 'scripts' / 'test.d' / (name + '.sh')).write_text(
            STAGE.format(name=name, seconds=seconds, rc=rc, marker=marker, burn=3 if name in burn else 0,
                         about='# test.sh: about %d s' % (about or {})[name] if name in (about or {}) else ''))
    return repo


def _run(repo: Path, slots: int, *patterns: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TEST_SLOTS=str(slots), TEST_FILL='0')  # no stage beyond the slots unless asked
    env.update(env_vars)
    return subprocess.run(['bash', str(repo / 'scripts' / 'test.sh'), *patterns], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _spans(repo: Path) -> dict[str, tuple[float, float]]:
    spans = {}
    for path in (repo / 'events').iterdir():
        marks = dict(line.split() for line in path.read_text().splitlines())
        spans[path.name] = (float(marks['start']), float(marks['end']))
    return spans


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


_ROW = re.compile(r'(\S+)\s+(PASS|SKIP|FAIL \(exit \d+\))\s+(\d+)\s+(\d+)$')


def _table(stdout: str) -> dict[str, str]:
    """STAGE -> RESULT from the table at the end."""
    return {name: result for name, (result, _seconds, _cpu) in _rows(stdout).items()}


def _rows(stdout: str) -> dict[str, tuple[str, int, int]]:
    """STAGE -> (RESULT, SECONDS, CPU) from the table at the end."""
    rows = stdout[stdout.index('STAGE '):].splitlines()[1:]
    return {m.group(1): (m.group(2), int(m.group(3)), int(m.group(4))) for m in (_ROW.match(r) for r in rows) if m}


@pytest.mark.skipif(shutil.which('bash') is None, reason='test.sh is a bash script')
def test_two_slots_run_two_stages_at_a_time_and_a_stage_marked_alone_by_itself(tmp_path):
    repo = _scratch_repo(tmp_path, {
        '10-alone': (0.6, 0, True),
        '20-a': (1.5, 0, False),
        '21-b': (1.5, 0, False),
        '22-c': (0.6, 0, False),
        '30-alone': (0.6, 0, True),
        '40-d': (0.6, 0, False),
    }, burn=('10-alone', '21-b'))
    proc = _run(repo, 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = _spans(repo)
    assert _overlap(spans['20-a'], spans['21-b'])  # two slots: both run at once
    for name in ('20-a', '21-b', '22-c'):
        assert not _overlap(spans['10-alone'], spans[name])
        assert not _overlap(spans['30-alone'], spans[name])
    assert spans['22-c'][0] >= min(spans['20-a'][1], spans['21-b'][1])  # a third waits for a free slot
    assert _table(proc.stdout) == {name: 'PASS' for name in spans}
    for name in spans:  # every stage's output is shown, also for those run beside others
        assert '%s says hello' % name in proc.stdout
        assert (repo / 'tests' / 'output' / 'stages' / (name + '.log')).read_text().strip().endswith('hello')
    assert proc.stdout.rstrip().endswith('6 passed, 0 failed')
    rows = _rows(proc.stdout)  # CPU seconds: counted for a stage run alone and for one run beside another
    assert rows['10-alone'][2] >= 1 and rows['21-b'][2] >= 1, rows
    assert rows['20-a'][2] == 0 and rows['40-d'][2] == 0, rows


@pytest.mark.skipif(shutil.which('bash') is None, reason='test.sh is a bash script')
def test_one_slot_runs_stages_one_after_the_other_and_a_failure_fails_the_run(tmp_path):
    repo = _scratch_repo(tmp_path, {'20-a': (0.4, 0, False), '21-b': (0.4, 3, False), '22-c': (0.2, 77, False)})
    proc = _run(repo, 1)
    assert proc.returncode != 0
    spans = _spans(repo)
    assert not _overlap(spans['20-a'], spans['21-b']) and not _overlap(spans['21-b'], spans['22-c'])
    assert _table(proc.stdout) == {'20-a': 'PASS', '21-b': 'FAIL (exit 3)', '22-c': 'SKIP'}
    assert '---- why 21-b failed' in proc.stdout
    assert '1 passed, 1 failed' in proc.stdout


@pytest.mark.skipif(shutil.which('bash') is None, reason='test.sh is a bash script')
def test_a_failure_beside_another_stage_is_recorded_and_digested(tmp_path):
    repo = _scratch_repo(tmp_path, {'20-a': (1.0, 0, False), '21-b': (0.2, 5, False)})
    proc = _run(repo, 2, '2')
    assert proc.returncode != 0
    assert _table(proc.stdout) == {'20-a': 'PASS', '21-b': 'FAIL (exit 5)'}
    assert '---- why 21-b failed' in proc.stdout
    assert '1 passed, 1 failed' in proc.stdout


@pytest.mark.skipif(shutil.which('bash') is None, reason='test.sh is a bash script')
def test_the_stages_that_run_alone_start_first_shortest_first_then_the_others_longest_first(tmp_path):
    repo = _scratch_repo(tmp_path, {
        '10-a': (0.3, 0, False), '20-b': (0.3, 0, False), '30-c': (0.3, 0, False), '31-d': (0.3, 0, False),
        '40-alone': (0.3, 0, True), '50-alone': (0.3, 0, True),
    }, about={'10-a': 5, '20-b': 50, '30-c': 20, '40-alone': 100, '50-alone': 10})
    proc = _run(repo, 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = _spans(repo)
    assert sorted(spans, key=lambda name: spans[name][0]) == ['50-alone', '40-alone', '20-b', '30-c', '10-a', '31-d']
    assert list(_rows(proc.stdout)) == ['50-alone', '40-alone', '20-b', '30-c', '10-a', '31-d']  # the table too


@pytest.mark.skipif(shutil.which('bash') is None, reason='test.sh is a bash script')
def test_idle_cores_let_one_stage_more_than_the_slots_start_also_beside_a_stage_that_runs_alone(tmp_path):
    repo = _scratch_repo(tmp_path, {
        '10-alone': (3, 0, True), '20-a': (5, 0, False), '21-b': (3, 0, False), '22-c': (3, 0, False),
        '23-d': (3, 0, False),
    })
    # Any idleness counts (0 thousandths of a core), so what is checked is how many stages that lets run.
    proc = _run(repo, 2, TEST_FILL='1', TEST_FILL_WINDOW='1', TEST_FILL_MILLICORES='0')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = _spans(repo)
    assert _overlap(spans['10-alone'], spans['20-a'])  # one beside the stage that runs alone, no more
    assert not _overlap(spans['10-alone'], spans['21-b'])
    assert _overlap(spans['20-a'], spans['21-b']) and _overlap(spans['21-b'], spans['22-c'])  # two slots and one
    times = sorted({t for span in spans.values() for t in span})
    assert max(sum(_overlap((t, t), (s[0] - 1e-9, s[1])) for s in spans.values()) for t in times) <= 3
    assert 'one more than the slots' in proc.stdout
    assert proc.stdout.rstrip().endswith('5 passed, 0 failed')
    assert '10-alone says hello' in proc.stdout and '20-a says hello' in proc.stdout
    # The output of the stage shown as it comes is not cut by the output of one that ended beside it.
    alone_part = proc.stdout[proc.stdout.index('==== stage 10-alone ===='):proc.stdout.index('10-alone says hello')]
    assert '20-a says hello' not in alone_part


@pytest.mark.skipif(shutil.which('bash') is None, reason='test.sh is a bash script')
def test_no_stage_more_than_the_slots_starts_while_the_cores_are_busy(tmp_path):
    repo = _scratch_repo(tmp_path, {'10-alone': (3, 0, True), '20-a': (3, 0, False), '21-b': (3, 0, False),
                                    '22-c': (3, 0, False)})
    proc = _run(repo, 2, TEST_FILL='1', TEST_FILL_WINDOW='1', TEST_FILL_MILLICORES='1000000')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = _spans(repo)
    assert not any(_overlap(spans['10-alone'], spans[name]) for name in ('20-a', '21-b', '22-c'))
    assert spans['22-c'][0] >= min(spans['20-a'][1], spans['21-b'][1])

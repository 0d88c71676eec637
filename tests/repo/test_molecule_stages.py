"""Every molecule scenario runs in the test command: one scripts/test.d stage per scenario, and no stage names a
scenario that does not exist (test.sh runs the scenarios as stages of their own, beside other stages)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_each_molecule_scenario_has_its_stage_and_each_stage_its_scenario():
    scenarios = {p.parent.name for p in (REPO / 'extensions' / 'molecule').glob('*/molecule.yml')}
    stages = {}
    for path in (REPO / 'scripts' / 'test.d').glob('*-molecule-*.sh'):
        calls = [line.split()[1] for line in path.read_text().splitlines() if line.startswith('molecule_scenario ')]
        assert len(calls) == 1, (path.name, calls)
        stages[path.name] = calls[0]
    assert scenarios, 'no molecule scenarios found'
    assert sorted(stages.values()) == sorted(scenarios), stages
    for name, scenario in stages.items():
        assert name.endswith('-molecule-%s.sh' % scenario), name

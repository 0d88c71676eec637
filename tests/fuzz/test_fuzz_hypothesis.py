"""Hypothesis drives the structure-aware mutator: a failing case shrinks to a minimal set of mutations.

Each example mutates a qemu-made seed image and runs the harness in a child process (read side, write
side on a copy, 5 s and 256 MiB limits, full reads compared with qemu-img). FUZZ_EXAMPLES sets the
number of examples (default 60). A failing example's files are kept under tests/output/fuzz/hypothesis/.
"""

from __future__ import annotations

import json
import os
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.backingchain.qcow2.tests.fuzz import harness, mutate, seeds

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, 'tests', 'output', 'fuzz')
SEEDS = seeds.build_seeds(os.path.join(OUT, 'cache'))
NAMES = sorted(n for n in SEEDS if n != 'v3-2m')
LAYOUTS = {}


@settings(max_examples=int(os.environ.get('FUZZ_EXAMPLES', '60')), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data(), recipe=st.sampled_from(NAMES), case_seed=st.integers(0, 1 << 30))
def test_mutated_seed_ends_in_typed_error_or_correct_read(data, recipe, case_seed, tmp_path_factory):
    files = seeds.load_seed(SEEDS[recipe])
    if recipe not in LAYOUTS:
        LAYOUTS[recipe] = mutate.seed_layouts(files)
    case = mutate.mutate(mutate.Case(files, LAYOUTS[recipe]), mutate.HypothesisDraw(data))
    case_dir = str(tmp_path_factory.mktemp('case'))
    harness.prepare_case(case_dir, {n: bytes(d) for n, d in case.files.items()})
    result = harness.judge(case_dir, case_seed)
    if result['failure'] is not None:
        keep = os.path.join(OUT, 'hypothesis', recipe)
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(os.path.join(case_dir, 'inner'), os.path.join(keep, 'inner'),
                        ignore=shutil.ignore_patterns(harness.COPY))
        with open(os.path.join(keep, 'case.json'), 'w') as f:
            json.dump({'recipe': recipe, 'case_seed': case_seed, 'mutations': case.log, 'result': result}, f, indent=1)
    assert result['failure'] is None, '%s %s: %s' % (recipe, case.log, result['failure'])
    shutil.rmtree(case_dir, ignore_errors=True)

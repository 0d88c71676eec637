"""The differential fuzzer's run: one structure-targeted mutation per case, the engine's verdicts next to qemu's.

    scripts/fuzz.sh --differential --cases 10000 [--jobs 2] [--seed 1] [--time-limit S] [--structures l2_zero_alloc,...]
    scripts/fuzz.sh --differential --replay DIR|ARCHIVE       # judge one saved case again
    scripts/fuzz.sh --differential --save-regression SEED/INDEX --name NAME --note TEXT   # keep it as a regression

Case N of seed S draws a structure (uniformly), then a seed image holding it, then one change to it.
Output under tests/output/fuzz-differential/: cases.jsonl, summary.json, and disagreements/<class>/case-N/
(files + case.json) for the first few cases of every disagreement class.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import shutil
import time

COUNTERS = ('corruptions', 'leaks', 'check-errors')
REGRESSION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'differential_regressions')


def _class_dir(key):
    return re.sub(r'[^A-Za-z0-9_.=,-]+', '_', key)[:120]


def counters_equal(verdict, engine, qemu):
    if verdict.get('check') != 'agree':
        return None
    ours, theirs = engine['check'].get('result'), (qemu.get('check') or {}).get('result')
    if ours is None or theirs is None:
        return None
    return all(ours.get(k, 0) == theirs.get(k, 0) for k in COUNTERS)


class CaseMaker:
    """Case N of seed S: a structure drawn uniformly, a seed image holding it, one change to it."""

    def __init__(self, seed_dirs, structures=None):
        from ansible_collections.backingchain.qcow2.tests.fuzz import mutate, seeds, targets
        self.seed_dirs = seed_dirs
        self.layouts = {name: mutate.seed_layouts(seeds.load_seed(d)) for name, d in sorted(seed_dirs.items())}
        wanted = structures or targets.STRUCTURES
        self.holders = {s: [r for r in sorted(self.layouts) if targets.applies(s, self.layouts[r]['top.qcow2'])]
                        for s in wanted}
        self.structures = [s for s in wanted if self.holders[s]]

    def make(self, seed, index):
        """(structure, recipe, description, {file name: bytes})."""
        from ansible_collections.backingchain.qcow2.tests.fuzz import mutate, seeds, targets
        draw = mutate.RandomDraw(random.Random('differential/%d/%d' % (seed, index)))
        structure = draw.pick(self.structures)
        recipe = draw.pick(self.holders[structure])
        case = mutate.Case(seeds.load_seed(self.seed_dirs[recipe]), self.layouts[recipe])
        desc = targets.mutate_structure(case, structure, draw)
        return structure, recipe, desc, {n: bytes(d) for n, d in case.files.items()}


def worker(wid, jobs, args, seed_dirs, queue):
    from ansible_collections.backingchain.qcow2.tests.fuzz import differential, harness
    from ansible_collections.backingchain.qcow2.tests.fuzz.runner import _scratch_root, keep_case
    maker = CaseMaker(seed_dirs, args.structures.split(',') if args.structures else None)
    scratch = _scratch_root()
    kept = collections.Counter()
    try:
        for index in range(wid, args.cases, jobs):
            if args.deadline and time.time() > args.deadline:
                break
            structure, recipe, desc, files = maker.make(args.seed, index)
            case_dir = os.path.join(scratch, 'case-%d' % index)
            harness.prepare_case(case_dir, files)
            del files
            result = differential.judge(case_dir, index)
            record = {'index': index, 'structure': structure, 'recipe': recipe, 'mutation': desc,
                      'verdict': result['verdict'], 'classes': result['classes'], 'failure': None,
                      'seconds': result.get('seconds'), 'engine': result['engine'], 'qemu': result['qemu']}
            if result.get('failure'):
                record['failure'] = '%s-%s' % (result['failure']['kind'], result['failure'].get('where') or '')
                record['error'] = result['failure'].get('error')
            equal = counters_equal(result['verdict'], result['engine'], result['qemu'])
            if equal is not None:
                record['counters_equal'] = equal
            keys = ['%s-%s' % (structure, c) for c in result['classes']]
            if record['failure']:
                keys.append(record['failure'])
            for key in keys:
                kept[key] += 1
                if kept[key] <= args.keep:
                    keep_case(case_dir, os.path.join(args.out, 'disagreements', _class_dir(key), 'case-%d' % index),
                              dict(record, seed=args.seed, case_seed=index, result=result))
            shutil.rmtree(case_dir, ignore_errors=True)
            queue.put(record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        queue.put(None)


def run(args):
    from ansible_collections.backingchain.qcow2.tests.fuzz import diffreport, seeds
    from ansible_collections.backingchain.qcow2.tests.fuzz.runner import records
    os.makedirs(args.out, exist_ok=True)
    seed_dirs = seeds.build_seeds(os.path.join(args.cache, 'cache'))
    if args.time_limit:
        args.deadline = time.time() + args.time_limit
    start = time.time()
    tally = diffreport.Tally()
    next_report = time.time() + 60
    with open(os.path.join(args.out, 'cases.jsonl'), 'w') as log:
        for record in records(worker, args, seed_dirs):
            log.write(json.dumps(record) + '\n')
            tally.add(record)
            if not args.quiet and (record['failure'] or record['classes']):
                print('case %d [%s, %s] %s: %s' % (record['index'], record['structure'], record['recipe'],
                                                   record['mutation'], record['failure'] or ', '.join(record['classes'])),
                      flush=True)
            if not args.quiet and time.time() >= next_report:
                next_report = time.time() + 60
                print('... %d/%d cases, %.0f s' % (tally.cases, args.cases, time.time() - start), flush=True)
    summary = tally.summary()
    summary.update(seconds=round(time.time() - start, 1), jobs=args.jobs, seed=args.seed)
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    diffreport.print_summary(summary)
    print('%d cases in %.0f s on %d jobs (seed %d)' % (tally.cases, summary['seconds'], args.jobs, args.seed))
    return 1 if summary['failures'] else 0


def replay(path):
    """Judge one saved case (a directory with inner/ and case.json, or a regression .tar.xz) and print it."""
    from ansible_collections.backingchain.qcow2.tests.fuzz import differential
    from ansible_collections.backingchain.qcow2.tests.fuzz.runner import _materialize
    case_dir = _materialize(path)
    try:
        result = differential.judge(case_dir)
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 1 if result.get('failure') or result['classes'] else 0


def save_regression(args):
    """Keep case INDEX of seed SEED (``--save-regression SEED/INDEX``) as a replayed differential regression."""
    from ansible_collections.backingchain.qcow2.tests.fuzz import differential, regressions, seeds
    seed, index = (int(x) for x in args.save_regression.split('/'))
    maker = CaseMaker(seeds.build_seeds(os.path.join(args.cache, 'cache')))
    structure, recipe, desc, files = maker.make(seed, index)
    name = args.name or '%s-%d-%d' % (structure, seed, index)
    dest = os.path.join(REGRESSION_DIR, name + '.tar.xz')
    regressions.save(dest, files, {'differential': True, 'seed': seed, 'index': index, 'structure': structure,
                                   'recipe': recipe, 'mutation': desc, 'note': args.note or '',
                                   'questions': list(differential.QUESTIONS)})
    print('wrote %s' % dest)
    return 0


def all_regressions():
    return sorted(os.path.join(REGRESSION_DIR, n) for n in os.listdir(REGRESSION_DIR) if n.endswith('.tar.xz'))

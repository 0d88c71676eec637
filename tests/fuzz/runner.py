#!/usr/bin/env python
"""The fuzzer's command line: run N cases on all cores, minimize a failure, replay a case.

    python tests/fuzz/runner.py --cases 100000 [--jobs 2] [--seed 1] [--qemu-every 4]
    python tests/fuzz/runner.py --replay tests/output/fuzz/failures/<sig>/case-123
    python tests/fuzz/runner.py --minimize tests/output/fuzz/failures/<sig>/case-123 --name short-name
    python tests/fuzz/runner.py --summarize tests/output/fuzz/cases.jsonl
    python tests/fuzz/runner.py --differential --cases 10000   # engine vs qemu verdicts (diffrun.py)

scripts/fuzz.sh wraps it. Exit status: 0 when no case failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bootstrap():
    """Make the checkout importable as ansible_collections.backingchain.qcow2 (as tests/conftest.py does)."""
    parts = REPO.split(os.sep)
    if parts[-3:] == ['ansible_collections', 'backingchain', 'qcow2']:
        root = os.sep.join(parts[:-3])
    else:
        root = tempfile.mkdtemp(prefix='backingchain-qcow2-fuzz-')
        link = os.path.join(root, 'ansible_collections', 'backingchain', 'qcow2')
        os.makedirs(os.path.dirname(link))
        os.symlink(REPO, link)
        main_pid = os.getpid()

        def _cleanup():
            if os.getpid() == main_pid:
                os.unlink(link)  # the symlink only, never what it points at
                shutil.rmtree(root, ignore_errors=True)

        atexit.register(_cleanup)
    sys.path.insert(0, root)
    return root


def _scratch_root():
    base = '/dev/shm' if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK) else tempfile.gettempdir()
    return tempfile.mkdtemp(prefix='backingchain-fuzz-', dir=base)


def _signature(result):
    f = result['failure']
    return '-'.join(x for x in (f['kind'], f.get('type'), f.get('step'), (f.get('where') or '').replace(':', '_')) if x)


DEFAULT_OUT = os.path.join(REPO, 'tests', 'output', 'fuzz')
RECIPE_WEIGHTS = {'v3-2m': 1}  # 14 MiB seed: slower to copy, used less


def worker(wid, jobs, args, seed_dirs, queue):
    from ansible_collections.backingchain.qcow2.tests.fuzz import harness, mutate, seeds
    import random
    names = sorted(seed_dirs)
    table = tuple((RECIPE_WEIGHTS.get(n, 4), n) for n in names)
    layouts = {}
    scratch = _scratch_root()
    saved = collections.Counter()
    try:
        for index in range(wid, args.cases, jobs):
            if args.deadline and time.time() > args.deadline:
                break
            rng = random.Random('%d/%d' % (args.seed, index))
            draw = mutate.RandomDraw(rng)
            recipe = mutate.weighted(draw, table)
            files = seeds.load_seed(seed_dirs[recipe])
            if recipe not in layouts:
                layouts[recipe] = mutate.seed_layouts(files)
            case = mutate.mutate(mutate.Case(files, layouts[recipe]), draw)
            del files
            case_dir = os.path.join(scratch, 'case-%d' % index)
            harness.prepare_case(case_dir, {n: bytes(d) for n, d in case.files.items()})
            mutations = case.log
            del case
            compare = args.qemu_every > 0 and index % args.qemu_every == 0
            result = harness.judge(case_dir, index, compare_qemu=compare, write_side=not args.no_write)
            record = {'index': index, 'recipe': recipe, 'primary': harness.primary_outcome(result),
                      'steps': result['steps'], 'qemu': result['qemu'], 'seconds': result.get('seconds'),
                      'cpu_seconds': result.get('cpu_seconds'), 'rss_mib': result.get('rss_mib'), 'failure': None}
            if result.get('failure'):
                sig = _signature(result)
                record['failure'] = sig
                record['error'] = result['failure'].get('error')
                saved[sig] += 1
                if saved[sig] <= args.keep:
                    keep_case(case_dir, os.path.join(args.out, 'failures', sig, 'case-%d' % index),
                              {'recipe': recipe, 'index': index, 'seed': args.seed, 'case_seed': index,
                               'mutations': mutations, 'result': result})
            shutil.rmtree(case_dir, ignore_errors=True)
            queue.put(record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        queue.put(None)


def keep_case(case_dir, dest, meta):
    """Copy a case's files (without the write side's copy) and its case.json to dest."""
    from ansible_collections.backingchain.qcow2.tests.fuzz import harness
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(case_dir, 'inner'), os.path.join(dest, 'inner'),
                    ignore=shutil.ignore_patterns(harness.COPY))
    with open(os.path.join(dest, 'case.json'), 'w') as f:
        json.dump(meta, f, indent=1)


def records(target, args, seed_dirs):
    """Run target(wid, jobs, args, seed_dirs, queue) in args.jobs processes; yield the records they send."""
    import multiprocessing
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(w, args.jobs, args, seed_dirs, queue)) for w in range(args.jobs)]
    for p in procs:
        p.start()
    running = len(procs)
    try:
        while running:
            record = queue.get()
            if record is None:  # a worker is done
                running -= 1
                continue
            yield record
    finally:
        for p in procs:
            p.join()


def run(args):
    from ansible_collections.backingchain.qcow2.tests.fuzz import seeds
    os.makedirs(args.out, exist_ok=True)
    seed_dirs = seeds.build_seeds(os.path.join(args.out, 'cache'))
    if args.recipes:
        seed_dirs = {k: v for k, v in seed_dirs.items() if any(r in k for r in args.recipes.split(','))}
    if args.time_limit:
        args.deadline = time.time() + args.time_limit
    start = time.time()
    primary = collections.Counter()
    steps = collections.defaultdict(collections.Counter)
    qemu = collections.Counter()
    failures = collections.Counter()
    failure_examples = {}
    by_recipe = collections.defaultdict(collections.Counter)
    cases = 0
    slowest = (0, None)
    most_cpu = (0, None)
    peak_rss = 0
    log = open(os.path.join(args.out, 'cases.jsonl'), 'w')
    next_report = time.time() + 30
    for record in records(worker, args, seed_dirs):
        cases += 1
        log.write(json.dumps(record) + '\n')
        primary[record['primary']] += 1
        by_recipe[record['recipe']][record['primary']] += 1
        for name, outcome in record['steps']:
            steps[name][outcome] += 1
        qemu[record['qemu']] += 1
        if record['seconds'] and record['seconds'] > slowest[0]:
            slowest = (record['seconds'], record['index'])
        if (record.get('cpu_seconds') or 0) > most_cpu[0]:
            most_cpu = (record['cpu_seconds'], record['index'])
        peak_rss = max(peak_rss, record['rss_mib'] or 0)
        if record['failure']:
            failures[record['failure']] += 1
            failure_examples.setdefault(record['failure'], (record['index'], record.get('error')))
            if not args.quiet:
                print('FAILURE case %d (%s): %s: %s' % (record['index'], record['recipe'], record['failure'],
                                                        record.get('error')), flush=True)
        if not args.quiet and time.time() >= next_report:
            next_report = time.time() + 30
            print('... %d/%d cases, %d failures, %.0f s' % (cases, args.cases, sum(failures.values()),
                                                            time.time() - start), flush=True)
    log.close()
    elapsed = time.time() - start
    summary = {'cases': cases, 'seconds': round(elapsed, 1), 'jobs': args.jobs, 'seed': args.seed,
               'outcomes': dict(primary.most_common()), 'steps': {k: dict(v) for k, v in steps.items()},
               'qemu': dict(qemu), 'failures': dict(failures), 'failure_examples': failure_examples,
               'slowest_case': slowest, 'most_cpu_case': most_cpu, 'peak_rss_mib': peak_rss,
               'by_recipe': {k: dict(v) for k, v in sorted(by_recipe.items())}}
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print_summary(summary)
    return 1 if failures or cases < args.cases and not args.time_limit else 0


def print_summary(s):
    print()
    most_cpu = s.get('most_cpu_case') or (0, None)
    print('%d cases in %.0f s on %d jobs (seed %d); slowest case %.2f s (#%s), %.2f s of CPU at most (#%s); peak RSS %d MiB'
          % (s['cases'], s['seconds'], s['jobs'], s['seed'], s['slowest_case'][0], s['slowest_case'][1], most_cpu[0],
             most_cpu[1], s['peak_rss_mib']))
    print('outcome (first read-side result):')
    for k, v in s['outcomes'].items():
        print('  %-28s %8d' % (k, v))
    print('per step:')
    for name, counts in s['steps'].items():
        print('  %-10s %s' % (name, ', '.join('%s %d' % kv for kv in sorted(counts.items(), key=lambda kv: -kv[1]))))
    print('qemu-img comparison: %s' % ', '.join('%s %d' % kv for kv in sorted(s['qemu'].items())))
    if s['failures']:
        print('FAILURES:')
        for k, v in s['failures'].items():
            print('  %-60s %6d  e.g. case %s: %s' % (k, v, s['failure_examples'][k][0], s['failure_examples'][k][1]))
    print('%d passed, %d failed' % (s['cases'] - sum(s['failures'].values()), sum(s['failures'].values())))


def summarize(path):
    """Rebuild the summary of a run from its cases.jsonl (e.g. after it was stopped early)."""
    primary = collections.Counter()
    steps = collections.defaultdict(collections.Counter)
    qemu = collections.Counter()
    failures = collections.Counter()
    examples = {}
    slowest = (0, None)
    most_cpu = (0, None)
    peak = 0
    cases = 0
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut by the stop
            cases += 1
            primary[r['primary']] += 1
            for name, outcome in r['steps']:
                steps[name][outcome] += 1
            qemu[r['qemu']] += 1
            if r['failure']:
                failures[r['failure']] += 1
                examples.setdefault(r['failure'], (r['index'], r.get('error')))
            if (r['seconds'] or 0) > slowest[0]:
                slowest = (r['seconds'], r['index'])
            if (r.get('cpu_seconds') or 0) > most_cpu[0]:
                most_cpu = (r['cpu_seconds'], r['index'])
            peak = max(peak, r['rss_mib'] or 0)
    summary = {'cases': cases, 'seconds': 0, 'jobs': 0, 'seed': 0, 'outcomes': dict(primary.most_common()),
               'steps': {k: dict(v) for k, v in steps.items()}, 'qemu': dict(qemu), 'failures': dict(failures),
               'failure_examples': examples, 'slowest_case': slowest, 'most_cpu_case': most_cpu,
               'peak_rss_mib': peak}
    print_summary(summary)
    return 1 if failures else 0


def replay(args):
    from ansible_collections.backingchain.qcow2.tests.fuzz import harness
    case_dir = _materialize(args.replay)
    meta = _meta(args.replay)
    result = harness.judge(case_dir, meta.get('case_seed', 0))
    shutil.rmtree(case_dir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 1 if result.get('failure') else 0


def _meta(path):
    if path.endswith('.tar.xz'):
        from ansible_collections.backingchain.qcow2.tests.fuzz import regressions
        return regressions.load(path)[1]
    with open(os.path.join(path, 'case.json')) as f:
        return json.load(f)


def _materialize(path):
    from ansible_collections.backingchain.qcow2.tests.fuzz import harness, regressions
    case_dir = tempfile.mkdtemp(prefix='backingchain-fuzz-replay-')
    if path.endswith('.tar.xz'):
        files, _meta_unused = regressions.load(path)
    else:
        inner = os.path.join(path, 'inner')
        files = {}
        for n in os.listdir(inner):
            with open(os.path.join(inner, n), 'rb') as f:
                files[n] = f.read()
    harness.prepare_case(case_dir, files)
    return case_dir


def minimize(args):
    from ansible_collections.backingchain.qcow2.tests.fuzz import regressions, seeds
    meta = _meta(args.minimize)
    seed_dirs = seeds.build_seeds(os.path.join(args.out, 'cache'))
    out = regressions.minimize_case(args.minimize, meta, seeds.load_seed(seed_dirs[meta['recipe']]),
                                    os.path.join(REPO, 'tests', 'fuzz', 'regressions'), args.name, args.note or '')
    print('wrote %s' % out)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', type=int, default=1000)
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--seed', type=int, default=1, help='base seed; case N uses (seed, N)')
    parser.add_argument('--qemu-every', type=int, default=4, help='compare full reads with qemu-img every Nth case (0: never)')
    parser.add_argument('--no-write', action='store_true', help='skip the write side')
    parser.add_argument('--recipes', help='comma-separated seed name parts to restrict to')
    parser.add_argument('--time-limit', type=float, default=0, help='stop after this many seconds')
    parser.add_argument('--keep', type=int, default=3, help='failing cases kept per signature')
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--quiet', action='store_true')
    parser.add_argument('--replay', help='run one saved case (directory or regression .tar.xz) and print the result')
    parser.add_argument('--minimize', help='minimize a saved failing case into tests/fuzz/regressions/')
    parser.add_argument('--summarize', help='print the summary of a run from its cases.jsonl')
    parser.add_argument('--name', help='file name (without .tar.xz) for --minimize')
    parser.add_argument('--note', help='what the regression is about, stored with it')
    parser.add_argument('--differential', action='store_true',
                        help="compare the engine's verdicts with qemu's (opens, check, full read, bytes) per structure")
    parser.add_argument('--structures', help='--differential: comma-separated structures to target (targets.py)')
    parser.add_argument('--save-regression', help='--differential: keep case SEED/INDEX as a replayed regression')
    args = parser.parse_args(argv)
    args.cache = os.path.abspath(args.out)  # the seed cache is shared by both modes
    if args.differential and args.out == DEFAULT_OUT:
        args.out = os.path.join(REPO, 'tests', 'output', 'fuzz-differential')
    args.out = os.path.abspath(args.out)  # qemu-img makes the seeds from another working directory
    args.deadline = 0
    if args.summarize:
        if args.differential:
            _bootstrap()
            from ansible_collections.backingchain.qcow2.tests.fuzz import diffreport
            diffreport.print_summary(diffreport.summarize_file(args.summarize))
            return 0
        return summarize(args.summarize)
    _bootstrap()
    if args.differential:
        from ansible_collections.backingchain.qcow2.tests.fuzz import diffrun
        if args.save_regression:
            return diffrun.save_regression(args)
        return diffrun.replay(args.replay) if args.replay else diffrun.run(args)
    if args.replay:
        return replay(args)
    if args.minimize:
        return minimize(args)
    return run(args)


if __name__ == '__main__':
    sys.exit(main())

"""Agreement figures of a differential run: per structure and per question, and the disagreement classes."""

from __future__ import annotations

import collections
import json

from ansible_collections.backingchain.qcow2.tests.fuzz.differential import QUESTIONS


class Tally:
    def __init__(self):
        self.cases = 0
        self.failures = collections.Counter()
        self.by_structure = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
        self.totals = collections.defaultdict(collections.Counter)
        self.classes = collections.Counter()
        self.class_examples = {}
        self.check_counts = collections.Counter()  # check JSON counters equal, when the exit codes agree

    def add(self, record):
        self.cases += 1
        if record.get('failure'):
            self.failures[record['failure']] += 1
            return
        for q in QUESTIONS:
            v = record['verdict'].get(q, 'unanswered')
            self.by_structure[record['structure']][q][v] += 1
            self.totals[q][v] += 1
        for key in record.get('classes', ()):
            full = '%s [%s]' % (key, record['structure'])
            self.classes[full] += 1
            self.class_examples.setdefault(full, (record['index'], record['recipe'], record.get('mutation')))
        if 'counters_equal' in record:
            self.check_counts[record['counters_equal']] += 1

    def summary(self):
        return {
            'cases': self.cases, 'failures': dict(self.failures),
            'totals': {q: dict(v) for q, v in self.totals.items()},
            'by_structure': {s: {q: dict(v) for q, v in qs.items()} for s, qs in sorted(self.by_structure.items())},
            'classes': dict(self.classes.most_common()), 'class_examples': self.class_examples,
            'check_counters_equal': dict(self.check_counts),
        }


def rate(counts):
    agree, disagree = counts.get('agree', 0), counts.get('disagree', 0)
    return (100.0 * agree / (agree + disagree)) if agree + disagree else None


def _cell(counts):
    r = rate(counts)
    if r is None:
        return '%-16s' % '-'
    text = '%.2f%% (%d/%d)' % (r, counts.get('agree', 0), counts.get('agree', 0) + counts.get('disagree', 0))
    return '%-16s' % text


def print_summary(s, out=print):
    out('')
    out('%d cases, %d engine failures (untyped exceptions, time-outs, memory)' % (s['cases'], sum(s['failures'].values())))
    for k, v in s['failures'].items():
        out('  FAILURE %s: %d' % (k, v))
    out('agreement with qemu (agree / compared; "policy": refused by the engine\'s backing policy, not compared)')
    header = ('structure', 'cases', 'opens', 'check exit code', 'full read', 'bytes equal', 'policy')
    out('%-20s %6s  %-20s %-20s %-20s %-20s %s' % header)
    for structure, qs in s['by_structure'].items():
        n = sum(qs['opens'].values())
        policy = qs['opens'].get('policy', 0)
        out('%-20s %6d  %-20s %-20s %-20s %-20s %d' % (structure, n, _cell(qs['opens']), _cell(qs['check']),
                                                       _cell(qs['read']), _cell(qs['bytes']), policy))
    t = s['totals']
    out('%-20s %6d  %-20s %-20s %-20s %-20s %d' % ('ALL', sum(t.get('opens', {}).values()), _cell(t.get('opens', {})),
                                                   _cell(t.get('check', {})), _cell(t.get('read', {})),
                                                   _cell(t.get('bytes', {})), t.get('opens', {}).get('policy', 0)))
    counters = s.get('check_counters_equal', {})
    if counters:
        out("check's corruption, leak and error counts equal to qemu's in %d of the %d cases where both checked"
            % (counters.get('true', counters.get(True, 0)), sum(counters.values())))
    if s['classes']:
        out('disagreement classes (question:engine,qemu [structure]: cases, e.g. case index):')
        for key, n in s['classes'].items():
            out('  %-70s %6d  e.g. #%s %s' % (key, n, s['class_examples'][key][0], s['class_examples'][key][1]))


def summarize_file(path):
    tally = Tally()
    with open(path) as f:
        for line in f:
            try:
                tally.add(json.loads(line))
            except ValueError:
                continue
    return tally.summary()

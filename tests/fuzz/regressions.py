"""Failing inputs kept as regression cases: minimized, stored as small .tar.xz files, replayed by pytest.

A regression archive holds ``case.json`` (seed recipe, mutations, the failure it once caused, a note)
and the case's files under ``inner/``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile

from ansible_collections.backingchain.qcow2.tests.fuzz import harness

REGRESSION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'regressions')
MAX_TRIES = 400


def load(path):
    """({file name: bytes}, meta) of a regression archive."""
    files = {}
    meta = {}
    with tarfile.open(path, 'r:xz') as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            if member.name == 'case.json':
                meta = json.loads(data.decode())
            elif member.name.startswith('inner/') and '/' not in member.name[6:] and member.name[6:] not in ('', '.', '..'):
                files[member.name[6:]] = data
    return files, meta


def save(path, files, meta):
    with tarfile.open(path, 'w:xz', preset=9) as tar:
        for name, data in [('case.json', json.dumps(meta, indent=1, sort_keys=True).encode())] + \
                [('inner/' + n, bytes(d)) for n, d in sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def all_cases():
    return sorted(os.path.join(REGRESSION_DIR, n) for n in os.listdir(REGRESSION_DIR) if n.endswith('.tar.xz'))


def _signature(result):
    f = result.get('failure')
    if not f:
        return None
    return (f['kind'], f.get('type'), f.get('step'), f.get('where'))


def _runs(seed, data):
    """Differences of data against seed as [(offset, bytes)], plus the seed's length."""
    runs = []
    n = min(len(seed), len(data))
    pos = 0
    block = 4096
    while pos < n:
        end = min(n, pos + block)
        if seed[pos:end] == data[pos:end]:
            pos = end
            continue
        i = pos
        while i < end:
            if seed[i] != data[i]:
                j = i
                while j < end and (seed[j] != data[j] or (j + 1 < end and seed[j + 1] != data[j + 1])):
                    j += 1
                if runs and runs[-1][0] + len(runs[-1][1]) >= i - 8:
                    start = runs[-1][0]
                    runs[-1] = (start, bytes(data[start:j]))
                else:
                    runs.append((i, bytes(data[i:j])))
                i = j
            else:
                i += 1
        pos = end
    return runs


def _apply(seed, patches, length, tail):
    data = bytearray(seed[:length]) + bytes(max(0, length - len(seed)))
    if tail is not None and length > len(seed):
        data[len(seed):length] = tail
    for offset, chunk in patches:
        if offset < len(data):
            data[offset:offset + len(chunk)] = chunk[:max(0, len(data) - offset)]
    return data


def minimize_case(case_path, meta, seed_files, dest_dir, name, note):
    """Shrink a failing case towards its seed while it fails the same way; write dest_dir/name.tar.xz."""
    from ansible_collections.backingchain.qcow2.tests.fuzz.runner import _materialize
    case_dir = _materialize(case_path)
    inner = os.path.join(case_dir, 'inner')
    files = {}
    for n in os.listdir(inner):
        if n != harness.COPY:
            with open(os.path.join(inner, n), 'rb') as f:
                files[n] = f.read()
    shutil.rmtree(case_dir, ignore_errors=True)
    case_seed = meta.get('case_seed', 0)
    scratch = tempfile.mkdtemp(prefix='backingchain-fuzz-min-')
    tries = [0]

    def result_of(candidate):
        tries[0] += 1
        d = os.path.join(scratch, 'c%d' % tries[0])
        harness.prepare_case(d, candidate)
        result = harness.judge(d, case_seed)
        shutil.rmtree(d, ignore_errors=True)
        return result

    target = _signature(result_of(files))
    if target is None:
        raise SystemExit('the case does not fail (any more); nothing to minimize')

    # per file: patches against the seed, the length, bytes past the seed's end
    state = {}
    for n, data in files.items():
        seed = seed_files.get(n)
        if seed is None:
            continue
        tail = bytes(data[len(seed):]) if len(data) > len(seed) else None
        state[n] = [_runs(seed, data), len(data), tail]

    def build():
        out = dict(files)
        for n, (patches, length, tail) in state.items():
            out[n] = bytes(_apply(seed_files[n], patches, length, tail))
        return out

    def still_fails():
        return tries[0] < MAX_TRIES and _signature(result_of(build())) == target

    for n in state:
        patches, length, tail = state[n]
        if length != len(seed_files[n]):  # try the seed's length
            state[n][1], state[n][2] = len(seed_files[n]), None
            if not still_fails():
                state[n][1], state[n][2] = length, tail
        # ddmin over the patches
        chunk = max(1, len(state[n][0]) // 2)
        while chunk >= 1 and state[n][0]:
            i = 0
            while i < len(state[n][0]):
                saved = state[n][0]
                state[n][0] = saved[:i] + saved[i + chunk:]
                if state[n][0] != saved and still_fails():
                    continue
                state[n][0] = saved
                i += chunk
            chunk //= 2
        # shrink each remaining patch byte by byte from both ends
        new = []
        for k, (offset, data) in enumerate(state[n][0]):
            for _end in range(2):
                while len(data) > 1:
                    trial = (offset + 1, data[1:]) if _end == 0 else (offset, data[:-1])
                    state[n][0] = new + [trial] + state[n][0][k + 1:]
                    if still_fails():
                        offset, data = trial
                    else:
                        break
            new.append((offset, data))
            state[n][0] = new + state[n][0][k + 1:]
    final = build()
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(dest_dir, exist_ok=True)
    out = os.path.join(dest_dir, name + '.tar.xz')
    save(out, final, {
        'recipe': meta.get('recipe'), 'case_seed': case_seed, 'note': note,
        'failure': {'kind': target[0], 'type': target[1], 'step': target[2], 'where': target[3]},
        'patches': {n: [(o, d.hex()) for o, d in s[0]] for n, s in state.items()},
        'mutations': meta.get('mutations'),
    })
    return out

"""The engine's verdicts on one image next to qemu's, on four questions.

    opens   does the image open with its backing chain, for I/O (engine: open_chain; qemu: qemu-io -r; qemu-img info
            is no good here: it opens without I/O and then skips the external data file)
    check   the exit code of check (0 clean, 1 not completed or not opened, 2 corrupt, 3 leaks only)
    read    does a full read of the guest view succeed (the first 32 MiB of a larger image)
    bytes   when both read: are the bytes equal (engine read vs qemu-img convert / qemu-img dd)

Both sides open read-only and share locks (qemu-img -U, the engine's force_share). The engine runs in the
fuzzer's isolated child (CPU, memory and file size limits); any exception other than a Qcow2Error is a
failure, as in the main fuzzer. Refusals by the engine's backing policy (UnsafeBackingError: json: and
protocol names, names escaping the case directory, qcow2 content behind a backing file without a format)
are deliberate and counted apart as 'policy', not as disagreements (docs/hardening.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import ChainPolicy, open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.check import (
    check_image, exit_code, report_as_qemu_json)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import Qcow2Error, UnsafeBackingError
from ansible_collections.backingchain.qcow2.tests.fuzz import harness

READ_LIMIT = 32 << 20  # guest bytes compared: the whole image up to this size, else its first READ_LIMIT bytes
QEMU_TIMEOUT = 30
QUESTIONS = ('opens', 'check', 'read', 'bytes')
POLICY = 'policy'


def _error(exc):
    return {'ok': False, 'type': type(exc).__name__, 'error': str(exc)[:300]}


# ---- the engine, inside the isolated child -------------------------------------------------------------
def engine_verdicts(case_dir):
    """What the engine says about inner/top.qcow2 (runs in harness.run_isolated's child)."""
    top = os.path.join(case_dir, 'inner', harness.TOP)
    policy = ChainPolicy(allowed_backing_dirs=[case_dir], allow_data_file=True)
    out = {'steps': []}
    base = harness._reset_peak_rss()
    try:
        out['opens'], out['read'] = _engine_open_and_read(top, policy)
        out['check'] = _engine_check(top, policy)
    except BaseException as exc:  # noqa: B902 - exactly what the fuzzer hunts
        import traceback
        out['failure'] = {'kind': 'untyped', 'error': '%s: %s' % (type(exc).__name__, str(exc)[:500]),
                          'type': type(exc).__name__, 'traceback': traceback.format_exc()[-6000:],
                          'where': harness._engine_frame(exc)}
    peak = harness._status_kib('VmHWM')
    if base is not None and peak is not None:
        out['case_rss'] = (peak - base) * 1024
    return out


def _engine_open_and_read(top, policy):
    try:
        chain = open_chain(top, fmt='qcow2', force_share=True, policy=policy)
    except Qcow2Error as exc:
        return _error(exc), {'ok': False, 'type': 'not-opened'}
    try:
        img = chain.top
        length = min(img.size, READ_LIMIT)
        digest = hashlib.sha256()
        for pos in range(0, length, harness.CHUNK):
            digest.update(img.read(pos, min(harness.CHUNK, length - pos)))
        read = {'ok': True, 'size': img.size, 'length': length, 'digest': digest.hexdigest()}
    except Qcow2Error as exc:
        read = _error(exc)
    finally:
        try:
            chain.close()
        except Qcow2Error:
            pass
    return {'ok': True}, read


def _engine_check(top, policy):
    try:
        with open_chain(top, fmt='qcow2', force_share=True, policy=policy, check_mode=True) as chain:
            report = check_image(chain.top)
    except Qcow2Error as exc:
        return dict(_error(exc), exit=1)
    return {'ok': True, 'exit': exit_code(report), 'result': report_as_qemu_json(report, harness.TOP),
            'messages': report.messages[:4]}


# ---- qemu, in the parent ----------------------------------------------------------------------------------
def _qemu(args, inner, timeout=QEMU_TIMEOUT, tool='qemu-img'):
    try:
        proc = subprocess.run([tool] + args, cwd=inner, capture_output=True, text=True, timeout=timeout,
                              errors='replace', check=False)  # hostile names reach qemu's messages
    except subprocess.TimeoutExpired:
        return None
    return proc


def _first_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ''


def qemu_verdicts(case_dir):
    """What qemu-img says about inner/top.qcow2 (None for a question it did not answer in time)."""
    inner = os.path.join(case_dir, 'inner')
    out = {}
    opened = _qemu(['-r', '-U', '-f', 'qcow2', '-c', 'quit', harness.TOP], inner, tool='qemu-io')
    size = None
    if opened is None:
        out['opens'] = None
    elif opened.returncode == 0:
        out['opens'] = {'ok': True}
        info = _qemu(['info', '-U', '--output=json', '-f', 'qcow2', harness.TOP], inner)
        try:
            size = json.loads(info.stdout)['virtual-size']
        except (AttributeError, ValueError, LookupError, TypeError):
            size = None
    else:
        out['opens'] = {'ok': False, 'error': _first_line(opened.stderr)}
    check = _qemu(['check', '-U', '--output=json', '-f', 'qcow2', harness.TOP], inner)
    if check is None:
        out['check'] = None
    else:
        try:
            result = json.loads(check.stdout) if check.stdout.strip() else None
        except ValueError:
            result = None
        out['check'] = {'exit': check.returncode, 'result': result, 'error': _first_line(check.stderr)}
    out['read'] = _qemu_read(inner, size) if out['opens'] and out['opens']['ok'] else {'ok': False, 'type': 'not-opened'}
    return out


def _qemu_read(inner, size):
    if size is None:
        return {'ok': False, 'error': 'no virtual size'}
    dest = os.path.join(inner, '..', 'qemu-read.raw')
    length = min(size, READ_LIMIT)
    if size <= READ_LIMIT:
        args = ['convert', '-U', '-f', 'qcow2', '-O', 'raw', harness.TOP, dest]
    else:
        args = ['dd', '-U', '-f', 'qcow2', '-O', 'raw', 'bs=1M', 'count=%d' % (READ_LIMIT >> 20),
                'if=' + harness.TOP, 'of=' + dest]
    proc = _qemu(args, inner, timeout=QEMU_TIMEOUT * 2)
    try:
        if proc is None:
            return None
        if proc.returncode != 0:
            return {'ok': False, 'error': _first_line(proc.stderr)}
        digest = hashlib.sha256()
        with open(dest, 'rb') as f:
            remaining = length
            while remaining:
                block = f.read(min(harness.CHUNK, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
            if remaining:  # a shorter result than the size says: pad as a reader would see zeros
                digest.update(bytes(remaining))
        return {'ok': True, 'size': size, 'length': length, 'digest': digest.hexdigest()}
    finally:
        if os.path.exists(dest):
            os.unlink(dest)


# ---- the comparison ---------------------------------------------------------------------------------------
def compare(engine, qemu):
    """{question: 'agree' | 'disagree' | 'policy' | 'unanswered' | 'n/a'}."""
    out = {}
    e_open, q_open = engine.get('opens'), qemu.get('opens')
    e_policy = bool(e_open) and e_open.get('type') == UnsafeBackingError.__name__
    if q_open is None or e_open is None:
        out['opens'] = 'unanswered'
    elif e_policy and q_open['ok']:
        out['opens'] = POLICY
    else:
        out['opens'] = 'agree' if e_open['ok'] == q_open['ok'] else 'disagree'
    e_check, q_check = engine.get('check'), qemu.get('check')
    if e_check is None or q_check is None:
        out['check'] = 'unanswered'
    elif e_check.get('type') == UnsafeBackingError.__name__ and q_check['exit'] != 1:
        out['check'] = POLICY
    else:
        out['check'] = 'agree' if e_check['exit'] == q_check['exit'] else 'disagree'
    e_read, q_read = engine.get('read'), qemu.get('read')
    if e_read is None or q_read is None:
        out['read'] = 'unanswered'
    elif out['opens'] == POLICY:
        out['read'] = POLICY
    else:
        out['read'] = 'agree' if e_read['ok'] == q_read['ok'] else 'disagree'
    if out['read'] == 'agree' and e_read['ok']:
        same = e_read['digest'] == q_read['digest'] and e_read['length'] == q_read['length']
        out['bytes'] = 'agree' if same else 'disagree'
    else:
        out['bytes'] = 'n/a'
    return out


def disagreement_classes(engine, qemu, verdict):
    """A short key per disagreeing question: what each side said (error types, exit codes)."""
    keys = []
    for q in QUESTIONS:
        if verdict.get(q) != 'disagree':
            continue
        if q == 'check':
            keys.append('check:engine=%s,qemu=%s' % (engine['check']['exit'], qemu['check']['exit']))
        elif q == 'bytes':
            keys.append('bytes:differ')
        else:
            e, m = engine[q], qemu[q]
            keys.append('%s:engine=%s,qemu=%s' % (q, 'ok' if e['ok'] else e.get('type'), 'ok' if m['ok'] else 'refused'))
    return keys


def judge(case_dir, seed=0):
    """Run both sides on a case; result has 'engine', 'qemu', 'verdict', 'classes' and 'failure'."""
    result = harness.run_isolated(case_dir, seed, body=engine_verdicts)
    engine = {k: result.get(k) for k in ('opens', 'read', 'check')}
    out = {'engine': engine, 'failure': result.get('failure'), 'seconds': result.get('seconds'),
           'cpu_seconds': result.get('cpu_seconds'), 'rss_mib': result.get('rss_mib')}
    if out['failure'] is not None:
        out['qemu'], out['verdict'], out['classes'] = {}, {}, []
        return out
    qemu = qemu_verdicts(case_dir)
    out['qemu'] = qemu
    out['verdict'] = compare(engine, qemu)
    out['classes'] = disagreement_classes(engine, qemu, out['verdict'])
    return out

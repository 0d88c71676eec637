"""Run one fuzz case against the engine, in a child process with memory, file size and time limits.

A case is a directory: ``inner/`` holds ``top.qcow2`` (the image under test) and whatever it may
reference (backing files, a data file); ``outside.raw`` lies beside ``inner/`` so that a backing
name escaping the directory finds a real file. The child runs the read side on top.qcow2 and the
write side on a copy, and reports each step as ``ok`` or the name of the Qcow2Error subclass raised.
Anything else - another exception type, a hang, too much memory, a crash, a read that disagrees
with qemu-img - is a failure.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import os
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import bitmaps as bitmaps_mod
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import ChainPolicy, open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import Qcow2Error
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.info import allocated_bytes
# Operations the engine imports lazily, imported once here so that every forked case starts warm.
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import (  # noqa: F401 pylint: disable=unused-import
    check as _check, info as _info, measure as _measure, metadata_commit as _metadata_commit, resize as _resize,
    snapshots as _snapshots, writer as _writer)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.refcount import (  # noqa: F401 pylint: disable=unused-import
    table as _refcount_table)

TOP = 'top.qcow2'
COPY = 'copy.qcow2'
TIMEOUT = 5.0  # CPU seconds per case (RLIMIT_CPU): what the engine spends, whatever else loads the machine
WALL_TIMEOUT = 60.0  # wall-clock backstop for a hang that uses no CPU (a deadlock, a blocking read)
RSS_LIMIT = 256 << 20  # bytes of resident memory per case
AS_HEADROOM = 512 << 20  # address space a case may add: allocations beyond it fail at once instead of swapping
FSIZE_LIMIT = 1 << 30  # no case may write a file larger than this
READ_ALL_LIMIT = 32 << 20  # images up to this virtual size are read whole and compared with qemu-img
MAP_LIMIT = 64 << 30  # guest bytes walked with extents() from the start (plus the last GiB)
CHUNK = 1 << 20


class StepFailure(Exception):
    """Raised by a step when the engine returned a wrong result (not an exception)."""


def _write_outside(case_dir):
    with open(os.path.join(case_dir, 'outside.raw'), 'wb') as f:
        f.write(bytes(range(256)) * 256)


def prepare_case(case_dir, files):
    """Write a case's files ({name: bytes}) into case_dir/inner."""
    inner = os.path.join(case_dir, 'inner')
    os.makedirs(inner, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(inner, name), 'wb') as f:
            f.write(data)
    _write_outside(case_dir)
    return inner


# ---- the steps -----------------------------------------------------------------------------------
class CaseRun:
    def __init__(self, case_dir, seed):
        self.inner = os.path.join(case_dir, 'inner')
        self.top = os.path.join(self.inner, TOP)
        self.rng = random.Random(seed)
        self.policy = ChainPolicy(allowed_backing_dirs=[self.inner], allow_data_file=True)
        self.steps = []
        self.failure = None
        self.digest = None
        self.size = None
        self.check_clean = False  # the engine's own check found nothing wrong with the original
        self.peak_growth = 0  # largest memory one operation added (bytes)

    def step(self, name, fn, *args):
        if self.failure is not None:
            return None
        base = _reset_peak_rss()
        try:
            return self._run_step(name, fn, args)
        finally:
            peak = _status_kib('VmHWM')
            if base is not None and peak is not None:
                self.peak_growth = max(self.peak_growth, (peak - base) * 1024)

    def _run_step(self, name, fn, args):
        try:
            value = fn(*args)
            if value == 'differs-on-corrupt-image':
                self.steps.append((name, value))
                return None
        except Qcow2Error as exc:
            self.steps.append((name, type(exc).__name__))
            return None
        except StepFailure as exc:
            self.steps.append((name, 'FAILED'))
            self.failure = {'kind': 'wrong-result', 'step': name, 'error': str(exc)}
            return None
        except BaseException as exc:  # noqa: B902 - exactly what the fuzzer hunts
            self.steps.append((name, 'FAILED'))
            self.failure = {'kind': 'untyped', 'step': name, 'error': '%s: %s' % (type(exc).__name__, str(exc)[:500]),
                            'type': type(exc).__name__, 'traceback': traceback.format_exc()[-6000:],
                            'where': _engine_frame(exc)}
            return None
        self.steps.append((name, 'ok'))
        return value

    # read side
    def info(self):
        api.image_info(self.top, backing_chain=True)

    def open(self):
        return open_chain(self.top, fmt='qcow2', policy=self.policy)

    def reads(self, chain):
        img = chain.top
        size = img.size
        self.size = size
        walked = min(size, MAP_LIMIT)
        img.extents(0, walked)
        if size > walked:
            img.extents(max(walked, size - (1 << 30)), 1 << 30)
        if size <= READ_ALL_LIMIT:
            h = hashlib.sha256()
            for pos in range(0, size, CHUNK):
                h.update(img.read(pos, min(CHUNK, size - pos)))
            self.digest = h.hexdigest()
        for _i in range(12):
            length = self.rng.choice((1, 511, 512, 4096, 65536, 200000))
            offset = self.rng.randrange(0, size + 2) if size < (1 << 62) else self.rng.randrange(0, 1 << 62)
            if self.rng.random() < 0.2:
                offset = max(0, size - self.rng.randrange(0, 70000))
            data = img.read(offset, length)
            if len(data) != length:
                raise StepFailure('read(%d, %d) returned %d bytes' % (offset, length, len(data)))

    def metadata(self, chain):
        img = chain.top
        img.snapshot_list()
        for b in img.bitmap_trust.loaded():
            bitmaps_mod.read_table(img, b)
        allocated_bytes(img)

    def snapshots(self):
        api.list_snapshots(self.top)

    def check(self):
        result = api.check(self.top)
        if result['exit_code'] not in (0, 1, 2, 3):
            raise StepFailure('check exit code %r' % result['exit_code'])
        self.check_clean = result['exit_code'] == 0

    def measure(self):
        api.measure(source=self.top, source_format='qcow2', policy=self.policy)

    # write side, on a copy beside the original (same directory: same backing names)
    def writes(self, copy):
        written = []
        with open_chain(copy, fmt='qcow2', writable=True, policy=self.policy) as chain:
            img = chain.top
            size = img.size
            for i in range(4):
                if not size:
                    break
                length = min(size, self.rng.choice((1, 512, 4096, 65536, 70000, 300000)))
                offset = self.rng.randrange(0, size - length + 1)
                if i == 3:
                    img.write_zeroes(offset, length)
                    written.append((offset, bytes(length)))
                else:
                    data = bytes([0xF0 + i]) * length
                    img.write(offset, data)
                    written.append((offset, data))
        with open_chain(copy, fmt='qcow2', policy=self.policy) as chain:
            for k, (offset, data) in enumerate(written):
                data = bytearray(data)
                for later_offset, later in written[k + 1:]:  # later writes win where they overlap
                    lo, hi = max(offset, later_offset), min(offset + len(data), later_offset + len(later))
                    if lo < hi:
                        data[lo - offset:hi - offset] = later[lo - later_offset:hi - later_offset]
                got = chain.top.read(offset, len(data))
                if got != data:
                    first = next(i for i in range(len(data)) if got[i] != data[i])
                    message = 'wrote %d bytes at %d; reading them back differs at byte %d' % (len(data), offset, first)
                    if self.check_clean:
                        raise StepFailure(message)
                    # check had reported corruption (e.g. two L2 entries sharing a cluster): qemu too writes
                    # through such entries in place; the result is counted, not failed
                    return 'differs-on-corrupt-image'
        return None

    def snapshot_cycle(self, copy):
        api.create_snapshot(copy, 'fuzz-snapshot')
        api.delete_snapshot(copy, 'fuzz-snapshot')

    def revert(self, copy):
        snaps = api.list_snapshots(copy)
        if snaps:
            api.revert_snapshot(copy, snaps[0]['id'])

    def repair(self, copy):
        api.check(copy, repair='all')

    def grow(self, copy):
        with open_chain(copy, fmt='qcow2', backing=False) as chain:
            size = chain.top.size
        api.grow_image(copy, size + 65536)

    def run(self, write_side=True):
        self.step('info', self.info)
        chain = self.step('open', self.open)
        if chain is not None:
            try:
                self.step('read', self.reads, chain)
                self.step('metadata', self.metadata, chain)
            finally:
                self.step('close', chain.close)
        self.step('snapshots', self.snapshots)
        self.step('check', self.check)
        self.step('measure', self.measure)
        if write_side:
            copy = os.path.join(self.inner, COPY)
            shutil.copyfile(self.top, copy)
            self.step('write', self.writes, copy)
            self.step('snapshot', self.snapshot_cycle, copy)
            self.step('revert', self.revert, copy)
            self.step('repair', self.repair, copy)
            self.step('grow', self.grow, copy)
        return {'steps': self.steps, 'failure': self.failure, 'digest': self.digest, 'size': self.size,
                'case_rss': self.peak_growth if _reset_peak_rss() is not None else None}


def _engine_frame(exc):
    """file:line of the innermost engine frame, to group failures."""
    where = None
    tb = exc.__traceback__
    while tb is not None:
        fname = tb.tb_frame.f_code.co_filename
        if '_qcow2' in fname:
            where = '%s:%d' % (os.path.basename(fname), tb.tb_lineno)
        tb = tb.tb_next
    return where


# ---- isolation -----------------------------------------------------------------------------------
def _address_space():
    """This process's virtual size in bytes (/proc/self/statm, first field, in pages)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _child(case_dir, seed, write_side, wfd, body=None):
    # the objects inherited from the forking process (a pytest worker can hold hundreds of MiB) are not the
    # case's: frozen, the garbage collector never walks them, so they cost the case no CPU and no copy-on-write
    gc.freeze()
    # a tracer the forking process had set (Hypothesis traces every line while it shrinks a failure) would run the
    # case many times slower, so a shrunk example times out where the real one does not
    sys.settrace(None)
    sys.setprofile(None)
    threading.settrace(None)
    try:
        # relative to what the child inherited: the forking process's own mappings (thread stacks and malloc
        # arenas of earlier tests' worker threads among them) are not the case's
        limit = _address_space() + AS_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        used = resource.getrusage(resource.RUSAGE_SELF)  # a forked child starts with its parent's usage at 0
        cpu_limit = int(used.ru_utime + used.ru_stime + TIMEOUT + 0.999)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))  # SIGXCPU, then SIGKILL
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-large writes fail with EFBIG instead of killing
        signal.alarm(int(WALL_TIMEOUT) + 2)  # backstop if the parent is gone
        result = body(case_dir) if body is not None else CaseRun(case_dir, seed).run(write_side)
        payload = json.dumps(result).encode()
    except BaseException as exc:  # noqa: B902
        failure = {'kind': 'harness', 'error': repr(exc)[:500], 'traceback': traceback.format_exc()[-4000:]}
        payload = json.dumps({'steps': [], 'failure': failure}).encode()
    view = memoryview(payload)
    while view:
        try:
            n = os.write(wfd, view)
        except OSError:
            break
        view = view[n:]
    os._exit(0)


def _status_kib(key):
    """A memory figure of this process from /proc/self/status, in KiB (None where there is no /proc)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset this process's peak RSS to its current RSS (Linux clear_refs); returns that RSS in KiB or None."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return None
    return _status_kib('VmRSS')


def run_isolated(case_dir, seed, write_side=True, timeout=WALL_TIMEOUT, cpu_timeout=TIMEOUT, body=None):
    """Run a case in a forked child; returns the result dict with 'failure' set on any failure.

    ``body(case_dir)`` replaces the fuzzer's read and write sides when given (the differential fuzzer's
    engine verdicts); it returns a JSON-able dict, with 'failure' set if the engine misbehaved.

    A case fails as a timeout when it uses more than ``cpu_timeout`` seconds of CPU (the child's RLIMIT_CPU
    stops it) or gives no result within ``timeout`` seconds of wall-clock time. Judging by CPU time keeps
    the verdict independent of what else runs on the machine: a loaded machine stretches a case's wall
    time several times over, an endless loop uses up its CPU time anyway.
    """
    rfd, wfd = os.pipe()
    inherited_kib = _status_kib('VmRSS') or 0  # what the child starts with: resident pages it shares with this one
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        _child(case_dir, seed, write_side, wfd, body)
    os.close(wfd)
    chunks = []
    timed_out = False
    try:
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                timed_out = True
                break
            ready, _w, _x = select.select([rfd], [], [], left)
            if not ready:
                continue
            data = os.read(rfd, 1 << 16)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(rfd)
        if timed_out:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
        _pid, status, usage = os.wait4(pid, 0)
    elapsed = time.monotonic() - start
    cpu = usage.ru_utime + usage.ru_stime
    rss = max(0, usage.ru_maxrss - inherited_kib) * 1024  # without what the child inherited from this process...
    if timed_out:
        result = {'steps': [], 'failure': {'kind': 'timeout', 'error': 'no result after %.1f s (%.2f s of CPU)'
                                                                       % (timeout, cpu)}}
    elif cpu >= cpu_timeout or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU):
        result = {'steps': [], 'failure': {'kind': 'timeout', 'error': 'used %.2f s of CPU (limit %.1f s)'
                                                                       % (cpu, cpu_timeout)}}
    elif os.WIFSIGNALED(status) or not chunks:
        result = {'steps': [], 'failure': {'kind': 'crash', 'error': 'child died (status %#x)' % status}}
    else:
        result = json.loads(b''.join(chunks).decode())
    if result.get('case_rss') is not None:
        # ...and where the case measured it, what the engine itself added: the largest growth of the peak RSS during one operation
        # (each operation is one module run in real use; memory an earlier step left behind is not its own)
        rss = result['case_rss']
    if result.get('failure') is None and rss > RSS_LIMIT:
        result['failure'] = {'kind': 'memory', 'error': 'peak RSS %d MiB' % (rss >> 20)}
    result['seconds'] = round(elapsed, 4)
    result['cpu_seconds'] = round(cpu, 4)
    result['rss_mib'] = rss >> 20
    return result


# ---- qemu-img as the reference for reads -----------------------------------------------------------
def qemu_digest(case_dir, timeout=30):
    """sha256 of qemu-img's raw conversion of top.qcow2, or None when qemu-img refuses the image."""
    inner = os.path.join(case_dir, 'inner')
    out = os.path.join(case_dir, 'qemu.raw')
    try:
        proc = subprocess.run(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'raw', TOP, out], cwd=inner,
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    h = hashlib.sha256()
    with open(out, 'rb') as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
    os.unlink(out)
    return h.hexdigest()


def judge(case_dir, seed, compare_qemu=True, write_side=True):
    """run_isolated plus the comparison with qemu-img; result['qemu'] says how that went."""
    result = run_isolated(case_dir, seed, write_side)
    result['qemu'] = 'not-compared'
    # qemu counts the virtual size in 512-byte sectors (it drops a partial last sector); compare whole sectors only
    if compare_qemu and (result.get('size') or 0) % 512:
        result['qemu'] = 'not-compared-partial-sector'
    elif compare_qemu and result.get('failure') is None and result.get('digest'):
        theirs = qemu_digest(case_dir)
        if theirs is None:
            result['qemu'] = 'qemu-refused'
        elif theirs == result['digest']:
            result['qemu'] = 'same'
        else:
            result['qemu'] = 'different'
            result['failure'] = {'kind': 'mismatch', 'error': 'guest data differs from qemu-img convert'}
    return result


def primary_outcome(result):
    """'ok', a typed error class name (first read-side step that raised one), or 'FAILURE:<kind>'."""
    if result.get('failure'):
        return 'FAILURE:' + result['failure']['kind']
    for name, outcome in result['steps']:
        if outcome != 'ok' and name in ('info', 'open', 'read', 'metadata', 'snapshots', 'check', 'measure'):
            return outcome
    return 'ok'

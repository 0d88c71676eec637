"""Engine operations in a child process, for tests that kill it or measure its memory.

Run as ``python -m ansible_collections.backingchain.qcow2.tests.helpers.engine_worker TASK_JSON``;
tests call run_worker()/start_worker(), which set up the import path. Tasks:

- ``crash-sequence``: a deterministic sequence of guest writes, zero writes and snapshot creations on
  an image; each operation is logged ('op ...') before it starts, and 'durable N' is logged once
  everything up to operation N has been flushed. Prints the number of I/O events it issued, so a
  dry run tells how many crash points there are (BACKINGCHAIN_QCOW2_CRASH_AT=N kills it at the Nth).
- ``write-and-die``: guest writes, then SIGKILL before the image is closed.
- ``measure``: one operation on a (large) image; prints JSON with ru_maxrss before and after.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time


def _engine():
    from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api, testhooks
    from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
    return api, testhooks, open_chain


def crash_ops(seed, count, size, cluster_size, snapshots):
    """The operations of a crash sequence: (index, kind, offset, length, byte)."""
    rng = random.Random(seed)
    ops = []
    for i in range(count):
        roll = rng.random()
        if snapshots and roll < 0.06:
            ops.append((i, 'snapshot', 0, 0, 0))
            continue
        kind = 'zero' if roll < 0.3 else 'write'
        length = rng.choice([1 + rng.randrange(600), rng.randint(1, 3 * cluster_size), cluster_size])
        length = min(length, size)
        offset = rng.randrange(0, size - length + 1)
        if rng.random() < 0.3:
            offset -= offset % cluster_size
        ops.append((i, kind, offset, length, rng.randint(1, 255)))
    return ops


def _crash_sequence(task):
    api, testhooks, open_chain = _engine()
    path = task['path']
    log = open(task['log'], 'a')

    def note(line):
        log.write(line + '\n')
        log.flush()
        os.fsync(log.fileno())

    chain = open_chain(path, writable=True)
    img = chain.top
    ops = crash_ops(task['seed'], task['count'], img.size, img.cluster_size, task.get('snapshots', False))
    for i, kind, offset, length, byte in ops:
        note('op %d %s %d %d %d' % (i, kind, offset, length, byte))
        if kind == 'snapshot':
            chain.close()
            api.create_snapshot(path, 'crash%d' % i)
            chain = open_chain(path, writable=True)
            img = chain.top
        elif kind == 'zero':
            img.write_zeroes(offset, length)
        else:
            img.write(offset, bytes([byte]) * length)
        if kind == 'snapshot' or i % task.get('flush_every', 3) == 2:
            img.flush()
            note('durable %d' % i)
    chain.close()
    note('durable %d' % (len(ops) - 1))
    print(testhooks.io_event_count())


def _write_and_die(task):
    open_chain = _engine()[2]
    chain = open_chain(task['path'], writable=True)
    for offset, length in task['writes']:
        chain.top.write(offset, b'\xd1' * length)
    chain.top.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _measure(task):
    api, _testhooks, open_chain = _engine()
    path, op = task['path'], task['op']
    before = _maxrss_mib()
    started = time.monotonic()
    result = None
    if op == 'extents':
        with open_chain(path) as chain:
            extents = chain.top.extents(0, chain.top.size)
            result = {'extents': len(extents), 'data_bytes': sum(e.length for e in extents if e.kind == 'data')}
    elif op == 'read-data':
        with open_chain(path) as chain:
            img = chain.top
            buf = memoryview(bytearray(1 << 20))
            total = 0
            for ext in img.extents(0, img.size):
                if ext.kind != 'data':
                    continue
                pos = ext.offset
                while pos < ext.end:
                    n = min(len(buf), ext.end - pos)
                    img.read_into(buf[:n], pos)
                    pos += n
                    total += n
            result = {'bytes_read': total}
    elif op == 'scattered-writes':
        rng = random.Random(task.get('seed', 1))
        with open_chain(path, writable=True) as chain:
            size = chain.top.size
            for _write in range(task.get('count', 2000)):
                chain.top.write(rng.randrange(0, size - 65536), b'\x77' * rng.randint(1, 65536))
        result = {'writes': task.get('count', 2000)}
    elif op == 'check':
        result = {'exit_code': api.check(path)['exit_code']}
    elif op == 'snapshot':
        result = api.create_snapshot(path, task.get('name', 'measured'))
    else:
        raise SystemExit('unknown op %r' % op)
    print(json.dumps({'op': op, 'rss_before_mib': before, 'rss_peak_mib': _maxrss_mib(),
                      'seconds': time.monotonic() - started, 'result': result}))


TASKS = {'crash-sequence': _crash_sequence, 'write-and-die': _write_and_die, 'measure': _measure}


def worker_env(extra=None):
    """The environment a child needs to import the collection the way the tests do."""
    import ansible_collections
    roots = [os.path.dirname(p) for p in ansible_collections.__path__]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(roots + [env['PYTHONPATH']] if env.get('PYTHONPATH') else roots)
    env.pop('BACKINGCHAIN_QCOW2_CRASH_AT', None)
    env.update(extra or {})
    return env


def _command(task):
    return [sys.executable, '-m', 'ansible_collections.backingchain.qcow2.tests.helpers.engine_worker', json.dumps(task)]


def run_worker(task, env=None, timeout=600, fresh_rss=False):
    """Run a task to its end (or its death); returns the CompletedProcess.

    fresh_rss: start the child from a small shell. Linux carries the peak RSS of the image a process
    had before exec into ru_maxrss, so a child forked straight from pytest starts at pytest's size.
    """
    command = _command(task)
    if fresh_rss:
        command = ['/bin/sh', '-c', '"$0" "$@"; exit $?'] + command  # sh forks the child: no exec from pytest
    return subprocess.run(command, env=worker_env(env), capture_output=True, text=True, timeout=timeout,
                          check=False)


def start_worker(task, env=None):
    """Start a task and return the Popen (to kill it at a moment of the test's choosing)."""
    return subprocess.Popen(_command(task), env=worker_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


if __name__ == '__main__':
    spec = json.loads(sys.argv[1])
    TASKS[spec['task']](spec)

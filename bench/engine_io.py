"""Sequential guest I/O through the engine against qemu-io, on the same machine and image geometry.

    .venv/bin/python bench/engine_io.py [--size 1G] [--chunk 64k --chunk 1M] [--dir /var/tmp] [--runs 3]

For each chunk size: write SIZE bytes sequentially into a fresh qcow2 image (64 KiB clusters), closing
(and so flushing) at the end, then read them back sequentially; the engine through open_chain(), qemu
through a qemu-io command script on stdin with -t writeback (qemu-io's default writethrough would
flush after every write). Both read from a warm page cache. Prints MB/s (10^6 bytes/s), the best of
--runs, and the engine/qemu ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'plugins', 'module_utils'))

from _qcow2.api import create_image  # noqa: E402  (the engine package, imported by path)
from _qcow2.chain import open_chain  # noqa: E402
from _qcow2.create import CreateOptions  # noqa: E402

UNITS = {'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30}


def size_arg(text):
    text = text.strip().lower()
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def engine_write(path, size, chunk):
    create_image(path, CreateOptions(size=size), overwrite=True)
    data = bytes([0xAB]) * chunk

    def run():
        with open_chain(path, writable=True) as chain:
            write = chain.top.write
            for offset in range(0, size, chunk):
                write(offset, data)
    return timed(run)


def engine_read(path, size, chunk):
    buf = memoryview(bytearray(chunk))

    def run():
        with open_chain(path) as chain:
            read_into = chain.top.read_into
            for offset in range(0, size, chunk):
                read_into(buf, offset)
    return timed(run)


def qemu_io(path, commands):
    script = ''.join(c + '\n' for c in commands) + 'quit\n'
    proc = subprocess.run(['qemu-io', '-f', 'qcow2', '-t', 'writeback', path], input=script, capture_output=True,
                          text=True, check=False)
    if proc.returncode or 'failed' in proc.stdout:
        raise SystemExit('qemu-io failed: %s' % (proc.stderr or proc.stdout)[-2000:])


def qemu_write(path, size, chunk):
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, str(size)], check=True)
    commands = ['write -q -P 0xab %d %d' % (offset, chunk) for offset in range(0, size, chunk)]
    return timed(lambda: qemu_io(path, commands))


def qemu_read(path, size, chunk):
    commands = ['read -q %d %d' % (offset, chunk) for offset in range(0, size, chunk)]
    return timed(lambda: qemu_io(path, commands))


def mbps(size, seconds):
    return size / seconds / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--size', type=size_arg, default=1 << 30)
    parser.add_argument('--chunk', type=size_arg, action='append')
    parser.add_argument('--dir', default=None, help='where the images go (default: a temporary directory)')
    parser.add_argument('--runs', type=int, default=3)
    args = parser.parse_args()
    chunks = args.chunk or [64 << 10, 1 << 20]
    if shutil.which('qemu-io') is None:
        raise SystemExit('qemu-io not found: install qemu-utils')
    workdir = tempfile.mkdtemp(prefix='engine-io-', dir=args.dir)
    try:
        rows = []
        for chunk in chunks:
            best = {}
            for _run in range(args.runs):
                for name, fn in (('engine write', engine_write), ('qemu-io write', qemu_write)):
                    path = os.path.join(workdir, name.split()[0] + '.qcow2')
                    seconds = fn(path, args.size, chunk)
                    best[name] = min(best.get(name, seconds), seconds)
                    reader = engine_read if name.startswith('engine') else qemu_read
                    read_name = name.replace('write', 'read')
                    seconds = reader(path, args.size, chunk)
                    best[read_name] = min(best.get(read_name, seconds), seconds)
            rows.append((chunk, best))
        print('sequential %d MiB, 64 KiB clusters, best of %d runs, MB/s' % (args.size >> 20, args.runs))
        header = ('chunk', 'engine write', 'qemu-io write', 'ratio', 'engine read', 'qemu-io read', 'ratio')
        print('%-8s %14s %14s %8s %14s %14s %8s' % header)
        for chunk, best in rows:
            ew, qw = mbps(args.size, best['engine write']), mbps(args.size, best['qemu-io write'])
            er, qr = mbps(args.size, best['engine read']), mbps(args.size, best['qemu-io read'])
            print('%-8s %14.0f %14.0f %8.2f %14.0f %14.0f %8.2f' % (
                '%dk' % (chunk >> 10), ew, qw, ew / qw, er, qr, er / qr))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()

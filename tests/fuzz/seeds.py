"""The fuzzer's seed corpus: small real images made by qemu-img and qemu-io.

Each recipe builds one case directory: the image under test is always ``top.qcow2``; backing files,
data files and a second image may sit beside it. Seeds are built once per qemu version into a cache
directory and copied for every case.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_img, qemu_io

TOP = 'top.qcow2'
RECIPE_VERSION = '2'


def _create(d, name, size, opts=None, backing=None, backing_fmt=None):
    args = ['create', '-q', '-f', 'qcow2']
    if backing:
        args += ['-b', backing, '-F', backing_fmt]
    if opts:
        args += ['-o', ','.join('%s=%s' % kv for kv in opts.items())]
    args.append(os.path.join(d, name))
    if size is not None:
        args.append(str(size))
    qemu_img(*args, cwd=d)


def _io(d, name, *cmds):
    qemu_io(os.path.join(d, name), *cmds, cwd=d)


def _pattern_raw(path, size, pieces):
    with open(path, 'wb') as f:
        f.truncate(size)
        for offset, length, byte in pieces:
            f.seek(offset)
            # compressible but not trivial: a byte pattern with a counter
            f.write(bytes((byte + (i // 512)) & 0xFF for i in range(length)))


WRITES = ('write -P 0x11 0 64k', 'write -P 0x22 1M 100k', 'write -z 2M 64k', 'write -P 0x33 3145984 4k',
          'write -P 0x44 4190208 4k')
WRITES_2M = ('write -P 0x11 0 64k', 'write -P 0x22 512k 100k', 'write -z 1M 64k', 'write -P 0x33 1049088 4k',
             'write -P 0x44 2093056 4k')


def plain(opts, size='4M', writes=WRITES):
    def build(d):
        _create(d, TOP, size, opts)
        _io(d, TOP, *writes)
    return build


def zero_clusters(d):
    """Preallocated zero clusters (zero flag and a host offset) beside plain zero clusters and data."""
    _create(d, TOP, '4M')
    _io(d, TOP, 'write -P 0x11 0 256k', 'write -z 64k 64k', 'write -z 1M 64k', 'write -P 0x22 2M 128k',
        'write -z 2M 64k')


def small_clusters(d):
    _create(d, TOP, '1M', {'cluster_size': 512})
    _io(d, TOP, 'write -P 0x11 0 4k', 'write -P 0x22 300k 3k', 'write -z 512k 4k', 'write -P 0x33 1044480 4k')


def huge_clusters(d):
    _create(d, TOP, '8M', {'cluster_size': '2M'})
    _io(d, TOP, 'write -P 0x11 0 4k', 'write -P 0x22 5M 64k', 'write -z 2M 2M')


def extended_l2(cluster_size):
    def build(d):
        _create(d, TOP, '4M', {'extended_l2': 'on', 'cluster_size': cluster_size})
        _io(d, TOP, 'write -P 0x11 0 4k', 'write -P 0x22 70k 6k', 'write -z 200k 8k', 'write -P 0x33 1M 64k',
            'write -z 2M 64k', 'discard 1M 4k')
    return build


def compressed(compression_type, cluster_size):
    def build(d):
        raw = os.path.join(d, 'src.raw')
        _pattern_raw(raw, 4 << 20, [(0, 200000, 1), (1 << 20, 70000, 7), (3 << 20, 65536, 9)])
        qemu_img('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o',
                 'compression_type=%s,cluster_size=%d' % (compression_type, cluster_size), raw, os.path.join(d, TOP))
        os.unlink(raw)
        _io(d, TOP, 'write -P 0x55 64k 4k')  # a plain cluster among compressed ones
    return build


def snapshots(compat):
    def build(d):
        _create(d, TOP, '2M', {'compat': compat})
        _io(d, TOP, 'write -P 0x11 0 128k', 'write -P 0x12 1M 64k')
        qemu_img('snapshot', '-c', 'first', os.path.join(d, TOP))
        _io(d, TOP, 'write -P 0x21 64k 64k', 'write -z 1M 64k')
        qemu_img('snapshot', '-c', 'second-with-a-longer-name', os.path.join(d, TOP))
        _io(d, TOP, 'write -P 0x31 1536k 4k')
    return build


def bitmaps(d):
    _create(d, TOP, '4M', {'cluster_size': 65536})
    top = os.path.join(d, TOP)
    qemu_img('bitmap', '--add', top, 'b0')
    qemu_img('bitmap', '--add', '--granularity', '4096', top, 'fine-grained')
    qemu_img('bitmap', '--add', top, 'off')
    qemu_img('bitmap', '--disable', top, 'off')
    _io(d, TOP, 'write -P 0x11 0 64k', 'write -P 0x22 2M 8k', 'write -P 0x33 4161536 4k')


def bitmaps_small_clusters(d):
    _create(d, TOP, '2M', {'cluster_size': 4096})
    top = os.path.join(d, TOP)
    qemu_img('bitmap', '--add', '--granularity', '512', top, 'g512')
    _io(d, TOP, 'write -P 0x11 0 4k', 'write -P 0x22 1M 16k')


def chain_qcow2(d):
    _create(d, 'base.qcow2', '4M')
    _io(d, 'base.qcow2', 'write -P 0xb1 0 1M', 'write -P 0xb2 3M 1M')
    _create(d, TOP, None, backing='base.qcow2', backing_fmt='qcow2')
    _io(d, TOP, 'write -P 0x11 64k 64k', 'write -z 3M 64k', 'write -P 0x12 3200k 4k')


def chain_raw(d):
    _pattern_raw(os.path.join(d, 'base.raw'), 2 << 20, [(0, 100000, 0xa0), (1 << 20, 4096, 0xa5)])
    _create(d, TOP, None, backing='base.raw', backing_fmt='raw')
    _io(d, TOP, 'write -P 0x11 0 4k', 'write -z 1M 64k')


def chain_three(d):
    _create(d, 'base.qcow2', '2M', {'compat': '0.10'})
    _io(d, 'base.qcow2', 'write -P 0xb1 0 2M')
    _create(d, 'mid.qcow2', None, {'cluster_size': 4096}, backing='base.qcow2', backing_fmt='qcow2')
    _io(d, 'mid.qcow2', 'write -P 0xc1 512k 512k')
    _create(d, TOP, None, backing='mid.qcow2', backing_fmt='qcow2')
    _io(d, TOP, 'write -P 0x11 768k 4k', 'write -z 0 64k')


def data_file(d):
    _create(d, TOP, '1M', {'data_file': 'data.raw'})
    _io(d, TOP, 'write -P 0x11 0 64k', 'write -P 0x22 512k 4k')


def kitchen_sink(d):
    raw = os.path.join(d, 'src.raw')
    _pattern_raw(raw, 2 << 20, [(0, 150000, 3), (1 << 20, 9000, 5)])
    top = os.path.join(d, TOP)
    qemu_img('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096,refcount_bits=8', raw, top)
    os.unlink(raw)
    qemu_img('snapshot', '-c', 's1', top)
    qemu_img('bitmap', '--add', top, 'b0')
    _io(d, TOP, 'write -P 0x77 8k 8k', 'write -z 1M 4k')


RECIPES = {
    'v3-64k': plain(None),
    'v2-64k': plain({'compat': '0.10'}),
    'v3-512': small_clusters,
    'v3-2m': huge_clusters,
    'v3-4k-rc1': plain({'cluster_size': 4096, 'refcount_bits': 1}, size='2M', writes=WRITES_2M),
    'v3-4k-rc2': plain({'cluster_size': 4096, 'refcount_bits': 2}, size='2M', writes=WRITES_2M),
    'v3-4k-rc4': plain({'cluster_size': 4096, 'refcount_bits': 4}, size='2M', writes=WRITES_2M),
    'v3-64k-rc8': plain({'refcount_bits': 8}),
    'v3-4k-rc32': plain({'cluster_size': 4096, 'refcount_bits': 32}, size='2M', writes=WRITES_2M),
    'v3-64k-rc64': plain({'refcount_bits': 64}),
    'v3-lazy': plain({'lazy_refcounts': 'on'}),
    'v3-zero-alloc': zero_clusters,
    'v3-prealloc': plain({'preallocation': 'metadata', 'cluster_size': 16384}, size='1M', writes=('write -P 1 0 4k',)),
    'extl2-64k': extended_l2(65536),
    'extl2-16k': extended_l2(16384),
    'zlib-64k': compressed('zlib', 65536),
    'zlib-4k': compressed('zlib', 4096),
    'zstd-64k': compressed('zstd', 65536),
    'snapshots-v3': snapshots('1.1'),
    'snapshots-v2': snapshots('0.10'),
    'bitmaps': bitmaps,
    'bitmaps-4k': bitmaps_small_clusters,
    'chain-qcow2': chain_qcow2,
    'chain-raw': chain_raw,
    'chain-three': chain_three,
    'data-file': data_file,
    'kitchen-sink': kitchen_sink,
}


def _qemu_version():
    out = subprocess.run(['qemu-img', '--version'], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0]


def seed_root(cache_dir):
    key = hashlib.sha256((_qemu_version() + RECIPE_VERSION).encode()).hexdigest()[:12]
    return os.path.join(cache_dir, 'seeds-' + key)


def build_seeds(cache_dir):
    """Build every recipe (once); returns {name: directory}."""
    root = seed_root(cache_dir)
    done = os.path.join(root, '.complete')
    if not os.path.exists(done):
        tmp = root + '.tmp-%d' % os.getpid()
        shutil.rmtree(tmp, ignore_errors=True)
        for name, recipe in RECIPES.items():
            d = os.path.join(tmp, name)
            os.makedirs(d)
            recipe(d)
        with open(os.path.join(tmp, '.complete'), 'w') as f:
            f.write('ok\n')
        shutil.rmtree(root, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return {name: os.path.join(root, name) for name in RECIPES}


def load_seed(directory):
    """{file name: bytes} of a seed directory."""
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), 'rb') as f:
            out[name] = f.read()
    return out

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Images for module tests, made and read through the engine (qemu-img is not guaranteed in ansible-test's venv)."""

from __future__ import annotations

import hashlib
import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

MIB = 1 << 20


def make_image(path, size=None, backing=None, backing_format="qcow2", **options):
    """A qcow2 image (4 MiB unless size says otherwise); with backing, an overlay recording the backing name as
    given, as large as its backing file unless size says otherwise."""
    if size is None and backing is None:
        size = 4 * MIB
    opts = api.CreateOptions(size=size, **options)
    if backing is not None:
        opts.backing_file, opts.backing_format = backing, backing_format
    api.create_image(str(path), opts)
    return str(path)


def write(path, offset, data):
    """Write guest data into an image (the top of its chain)."""
    with api.open_chain(str(path), fmt="qcow2", writable=True) as chain:
        chain.top.write(offset, data)


def three_layer_chain(directory):
    """base <- mid <- top in directory (relative backing names), each layer with its own data; their paths."""
    base = make_image(directory / "base.qcow2", size=2 * MIB)
    write(base, 0, b"\x01" * MIB)
    mid = make_image(directory / "mid.qcow2", backing="base.qcow2")
    write(mid, 65536, b"\x02" * 131072)
    top = make_image(directory / "top.qcow2", backing="mid.qcow2")
    write(top, 98304, b"\x03" * 4096)
    return base, mid, top


def guest_view(path):
    """Every byte the guest reads through the image and its chain."""
    with api.open_chain(str(path)) as chain:
        return bytes(chain.top.read(0, chain.top.size))


def info(path, backing_chain=False):
    """The engine's qemu-img info dicts (dash keys), top first."""
    result = api.image_info(str(path), backing_chain=backing_chain, force_share=True)
    return result if backing_chain else result[0]


def fingerprint(directory):
    """Name -> (mtime_ns, size, sha256) of every file under directory: equal fingerprints mean nothing was touched."""
    prints = {}
    for root, _dirs, files in os.walk(str(directory)):
        for name in files:
            path = os.path.join(root, name)
            st = os.stat(path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            prints[os.path.relpath(path, str(directory))] = (st.st_mtime_ns, st.st_size, digest)
    return prints

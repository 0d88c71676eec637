# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""A new qcow2 image written under a temporary name beside its destination and renamed over it only when
complete and flushed, so a crash never leaves a half-written image under the destination's name.

The temporary file lives in the destination's directory, so a relative backing name resolves the same.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import typing

from .chain import open_chain
from .create import create
from .errors import InvalidArgumentError
from .fileio import bind_new_file
from .locking import refuse_if_held
from .paths import remove_stale_temporaries

if typing.TYPE_CHECKING:  # names used in annotations only
    from .chain import Chain, ChainPolicy
    from .create import CreateOptions


def check_destination(dest: str) -> None:
    """The destination must be a file name in an existing directory."""
    if os.path.isdir(dest):
        raise InvalidArgumentError("Destination %s is a directory" % dest, dest)
    if not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise InvalidArgumentError("The directory of destination %s does not exist" % dest, dest)


def refuse_held(dest: str) -> None:
    """An existing destination is replaced: nobody may hold it (a running VM, qemu-img)."""
    if os.path.exists(dest):
        refuse_if_held(dest)


@contextlib.contextmanager
def new_image(dest: str, options: CreateOptions, policy: ChainPolicy | None) -> typing.Iterator[Chain]:
    """Create a qcow2 image (CreateOptions) under a temporary name and yield its open chain (the new image on top,
    writable, with its backing chain if it has one); when the block ends without an error, flush it and rename it
    to dest. On an error the temporary file is removed and dest is left as it was."""
    directory = os.path.dirname(os.path.abspath(dest))
    remove_stale_temporaries(dest)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    bind_new_file(dest, tmp)
    try:
        create(tmp, options, policy=policy, overwrite=True)
        with open_chain(tmp, fmt="qcow2", writable=True, policy=policy) as chain:
            chain.top.ordered_flushes = False  # nobody sees the file before the rename: one flush at the end suffices
            yield chain
            chain.top.flush()
            chain.top.file.flush()  # durable before the rename makes it visible
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600; give it the mode a new file would get
        os.replace(tmp, dest)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

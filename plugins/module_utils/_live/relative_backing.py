# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Starting a job that rewrites a backing link, keeping the chain's naming style.

A commit below the active layer rewrites the backing name of the image above ``top``; a
pull with a base rewrites the active image's. With the *_RELATIVE flag libvirt writes a
relative name, but only if every link it walks was itself recorded relative; otherwise it
refuses with VIR_ERR_OPERATION_INVALID "can't keep relative backing relationship" before
starting anything (verified with libvirt 9.0). So ``relative=None`` asks for relative and
falls back to absolute on exactly that refusal: relative chains stay relative (movable
directories), absolute ones (e.g. made by libvirt snapshots) stay absolute.
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
import typing as t

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import (
    libvirt_error_code,
    libvirt_error_text,
    require_libvirt,
)


def start_keeping_relative(start: t.Callable[[int], None], relative_flag: int, relative: bool | None, what: str) -> bool:
    """Call ``start(extra_flags)`` and return whether the relative flag was used.

    relative: True requires a relative link (LiveError if libvirt refuses), False writes an
    absolute one, None keeps whatever style the chain has.
    """
    libvirt = require_libvirt()
    if relative is False:
        _start_or_raise(start, 0, what)
        return False
    try:
        start(relative_flag)
        return True
    except libvirt.libvirtError as exc:
        refused = libvirt_error_code(exc) == libvirt.VIR_ERR_OPERATION_INVALID and "relative" in libvirt_error_text(exc)
        if relative is None and refused:
            _start_or_raise(start, 0, what)
            return False
        raise LiveError("cannot start %s: %s" % (what, libvirt_error_text(exc)))


def _start_or_raise(start: t.Callable[[int], None], flags: int, what: str) -> None:
    libvirt = require_libvirt()
    try:
        start(flags)
    except libvirt.libvirtError as exc:
        raise LiveError("cannot start %s: %s" % (what, libvirt_error_text(exc)))

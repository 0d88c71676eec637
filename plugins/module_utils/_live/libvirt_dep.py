# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Guarded import of libvirt-python.

Whatever needs libvirt calls require_libvirt(), which raises LiveError naming the library (``library``
and ``import_error`` in its details) when it is not installed; the modules report that, like any missing
library, with missing_required_lib().
"""

from __future__ import annotations

import traceback
import types
import typing as t

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError

try:
    import libvirt
except ImportError:
    libvirt = None
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_LIBVIRT = True
    LIBVIRT_IMPORT_ERROR = None

# libvirt-python has no type hints: its handles are annotated by what they are, as Any.
Connection = t.Any  # libvirt.virConnect
DomainHandle = t.Any  # libvirt.virDomain


def require_libvirt() -> types.ModuleType:
    """Return the libvirt module, or raise LiveError naming the missing library."""
    if libvirt is None:
        raise LiveError("the Python library libvirt-python is required on the target host for operations on running domains",
                        library="libvirt-python", import_error=LIBVIRT_IMPORT_ERROR)
    return libvirt


def libvirt_error_code(exc: BaseException) -> int | None:
    """The VIR_ERR_* code of a libvirtError, or None for any other exception."""
    get_code = getattr(exc, "get_error_code", None)
    return get_code() if get_code else None


def libvirt_error_text(exc: BaseException) -> str:
    """libvirt's own message without the Python wrapper's 'virDomainX() failed' text."""
    get_message = getattr(exc, "get_error_message", None)
    text = get_message() if get_message else None
    return text or str(exc)

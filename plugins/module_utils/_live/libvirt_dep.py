# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Guarded import of libvirt-python.

Modules do ``if not HAS_LIBVIRT: module.fail_json(msg=missing_required_lib("libvirt-python"),
exception=LIBVIRT_IMPORT_ERROR)``; the helpers here raise LiveError instead when called without it.
"""

from __future__ import annotations

import traceback

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


def require_libvirt():
    """Return the libvirt module, or raise LiveError naming the missing library."""
    if libvirt is None:
        raise LiveError("the Python library libvirt-python is required on the target host for operations on running domains",
                        import_error=LIBVIRT_IMPORT_ERROR)
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

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Optional third-party libraries, imported guarded so modules can report missing_required_lib()."""

from __future__ import annotations

import typing


from .errors import MissingDependencyError

try:
    import construct  # noqa: F401  pylint: disable=unused-import
except ImportError:
    import traceback
    HAS_CONSTRUCT = False
    CONSTRUCT_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CONSTRUCT = True
    CONSTRUCT_IMPORT_ERROR = None

_zstd = {}  # imported on first use: most images never need zstd, and the import costs start-up time


def _load_zstd() -> dict:
    if _zstd:
        return _zstd
    try:
        import zstandard
    except ImportError:
        import traceback
        _zstd["error"] = traceback.format_exc()
        try:
            from compression import zstd as stdlib_zstd  # Python 3.14+
        except ImportError:
            _zstd["factory"] = None
        else:
            _zstd["factory"] = stdlib_zstd.ZstdDecompressor
            _zstd["compress"] = stdlib_zstd.compress
    else:
        _zstd["factory"] = zstandard.ZstdDecompressor
        _zstd["compress"] = zstandard.ZstdCompressor().compress
    return _zstd


def has_zstd() -> bool:
    return _load_zstd().get("factory") is not None


def require_construct() -> None:
    """Raise MissingDependencyError unless construct is importable."""
    if not HAS_CONSTRUCT:
        raise MissingDependencyError(
            "The Python library construct is required to parse qcow2 headers; install it on the target host",
            library="construct", import_error=CONSTRUCT_IMPORT_ERROR)


def require_zstd(path: str | None = None) -> None:
    """Raise MissingDependencyError unless a zstd implementation is importable."""
    if not has_zstd():
        raise MissingDependencyError(
            "Image %s uses zstd compression; the Python library zstandard is required to read its compressed clusters"
            % (path or ""), library="zstandard", import_error=_zstd.get("error"))


def zstd_decompressor() -> typing.Any:
    require_zstd()
    return _zstd["factory"]()


def zstd_compress(data: bytes) -> bytes:
    require_zstd()
    return _zstd["compress"](data)

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Optional third-party libraries, imported guarded so modules can report missing_required_lib()."""

from __future__ import annotations

import importlib.util
import typing


from .errors import MissingDependencyError

# construct is looked for here and imported when a declaration is first needed (load_construct): reading a plain
# header needs none, and importing construct (with its debugger support, pdb and pickle) costs a module run about
# as much start-up time as the whole engine.
HAS_CONSTRUCT = importlib.util.find_spec("construct") is not None
CONSTRUCT_IMPORT_ERROR = None if HAS_CONSTRUCT else "ModuleNotFoundError: No module named 'construct'"

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


def load_construct() -> typing.Any:
    """The construct package, imported on first use; MissingDependencyError when it is missing or broken."""
    require_construct()
    try:
        import construct
    except ImportError:
        import traceback
        raise MissingDependencyError(
            "The Python library construct is required to parse qcow2 headers; it is installed but cannot be imported",
            library="construct", import_error=traceback.format_exc()) from None
    return construct


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

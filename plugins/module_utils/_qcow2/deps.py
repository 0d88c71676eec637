# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Optional third-party libraries, imported guarded so modules can report missing_required_lib()."""

from __future__ import annotations

import traceback

from .errors import MissingDependencyError

try:
    import construct  # noqa: F401  pylint: disable=unused-import
except ImportError:
    HAS_CONSTRUCT = False
    CONSTRUCT_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CONSTRUCT = True
    CONSTRUCT_IMPORT_ERROR = None

_zstd_decompressor_factory = None
_zstd_compress = None
ZSTD_IMPORT_ERROR = None
try:
    import zstandard as _zstandard
except ImportError:
    ZSTD_IMPORT_ERROR = traceback.format_exc()
    try:
        from compression import zstd as _stdlib_zstd  # Python 3.14+
    except ImportError:
        _stdlib_zstd = None
    if _stdlib_zstd is not None:
        _zstd_decompressor_factory = _stdlib_zstd.ZstdDecompressor
        _zstd_compress = _stdlib_zstd.compress
        ZSTD_IMPORT_ERROR = None
else:
    _zstd_decompressor_factory = _zstandard.ZstdDecompressor
    _zstd_compress = _zstandard.ZstdCompressor().compress

HAS_ZSTD = _zstd_decompressor_factory is not None


def require_construct():
    """Raise MissingDependencyError unless construct is importable."""
    if not HAS_CONSTRUCT:
        raise MissingDependencyError(
            "The Python library construct is required to parse qcow2 headers; install it on the target host",
            library="construct", import_error=CONSTRUCT_IMPORT_ERROR)


def require_zstd(path=None):
    """Raise MissingDependencyError unless a zstd implementation is importable."""
    if not HAS_ZSTD:
        raise MissingDependencyError(
            "Image %s uses zstd compression; the Python library zstandard is required to read its compressed clusters"
            % (path or ""), library="zstandard", import_error=ZSTD_IMPORT_ERROR)


def zstd_decompressor():
    require_zstd()
    return _zstd_decompressor_factory()


def zstd_compress(data):
    require_zstd()
    return _zstd_compress(data)

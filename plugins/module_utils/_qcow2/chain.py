# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Opening an image with its whole backing chain, as qemu resolves it, and refusing what qemu would
not do safely: probing a backing file into qcow2, json:/protocol names, loops, absurd depths,
external data files (unless allowed), backing files outside the allowed directories.
"""

from __future__ import annotations

import os
import resource
import typing

from . import constants as C
from .errors import BackingChainError, FormatError, Qcow2Error, UnsafeBackingError, UnsupportedError
from .fileio import BlockFile
from . import locking
from .image import Qcow2Image, probe_is_qcow2
from .raw import RawImage

Image = typing.Union[Qcow2Image, RawImage]  # an open image of a chain: qcow2, or raw (a base)


class ChainPolicy:
    """What backing references an operation accepts."""

    def __init__(self, allowed_backing_dirs: list[str] | None = None, allow_data_file: bool = False, max_depth: int = C.MAX_CHAIN_DEPTH) -> None:
        self.allowed_backing_dirs = [os.path.realpath(d) for d in allowed_backing_dirs] if allowed_backing_dirs else None
        self.allow_data_file = allow_data_file
        self.max_depth = max_depth


DEFAULT_POLICY = ChainPolicy()


def resolve_backing_path(overlay_path: str, name: str) -> str:
    """qemu's path_combine(): a relative backing name is relative to the overlay's directory."""
    if os.path.isabs(name):
        return name
    return os.path.join(os.path.dirname(overlay_path), name)


def has_protocol(name: str) -> bool:
    """qemu's path_has_protocol(): a ':' before any '/' makes 'proto:rest' a protocol name."""
    for ch in name:
        if ch in "/\\":
            return False
        if ch == ":":
            return True
    return False


def check_backing_reference(name: str, overlay_path: str, policy: ChainPolicy, what: str = "backing file") -> str:
    """Refuse hostile backing names; return the path qemu would open."""
    if name.startswith("json:"):
        raise UnsafeBackingError("%s of %s is a json: pseudo-protocol name (%r); refused" % (what.capitalize(), overlay_path, name),
                                 overlay_path)
    if has_protocol(name):
        raise UnsafeBackingError("%s of %s names a protocol (%r); only plain file paths are accepted"
                                 % (what.capitalize(), overlay_path, name), overlay_path)
    path = resolve_backing_path(overlay_path, name)
    if policy.allowed_backing_dirs is not None:
        real = os.path.realpath(path)
        if not any(real == d or real.startswith(d.rstrip("/") + "/") for d in policy.allowed_backing_dirs):
            raise UnsafeBackingError("%s %s of %s resolves to %s, outside the allowed directories (%s)"
                                     % (what.capitalize(), name, overlay_path, real, ", ".join(policy.allowed_backing_dirs)),
                                     overlay_path)
    return path


class Chain:
    """The images of a chain, top first; closing it closes them all."""

    def __init__(self, images: list[Image]) -> None:
        self.images = images

    @property
    def top(self) -> Image:
        return self.images[0]

    @property
    def depth(self) -> int:
        return len(self.images)

    @property
    def paths(self) -> list[str]:
        """The images' paths, top first."""
        return [img.path for img in self.images]

    def close(self) -> None:
        errors = []
        for img in self.images:
            try:
                img.close()
            except Qcow2Error as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> typing.Iterator[Image]:
        return iter(self.images)


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a hostile name: too long, a file used as a directory, a symlink loop...
        raise BackingChainError("Could not open '%s': %s" % (path, exc.strerror or exc), path) from None
    return (st.st_dev, st.st_ino)


def _ensure_fd_room(depth: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = depth + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(hard, want)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def detect_format(path: str) -> str:
    """The top image's format when the caller gave none: qcow2 if it says so, raw otherwise."""
    return "qcow2" if probe_is_qcow2(path) else "raw"


def open_image_file(path: str, fmt: str, writable: bool = False, force_share: bool = False,
                    policy: ChainPolicy = DEFAULT_POLICY, check_mode: bool = False) -> Image:
    """One file, no backing."""
    if fmt == "qcow2":
        img = Qcow2Image(path, writable=writable, force_share=force_share, check_mode=check_mode)
        try:
            _attach_data_file(img, policy, force_share)
        except BaseException:
            img.close()
            raise
        return img
    if fmt == "raw":
        return RawImage(path, writable=writable, force_share=force_share)
    raise UnsupportedError("Image format '%s' of %s is not supported (qcow2 and raw are)" % (fmt, path), path)


def _attach_data_file(img: Qcow2Image, policy: ChainPolicy, force_share: bool) -> None:
    name = img.header.data_file
    if not (img.header.incompatible_features & C.INCOMPAT_DATA_FILE):
        return
    if not policy.allow_data_file:
        raise UnsafeBackingError("Image %s uses an external data file %r (incompatible feature bit 2); refused unless "
                                 "external data files are explicitly allowed" % (img.path, name), img.path)
    path = check_backing_reference(name, img.path, policy, "data file")
    img.data_file = BlockFile(path, False)
    if not force_share:
        locking.acquire(img.data_file.fd, path, False)


def open_chain(path: str, fmt: str | None = None, writable: bool = False, force_share: bool = False,
               policy: ChainPolicy | None = None, writable_backing: typing.Iterable[str] = (), backing: bool = True,
               check_mode: bool = False) -> Chain:
    """Open path and every backing file below it. ``writable_backing`` lists backing files (any spelling of
    the same file) that must be opened writable too, e.g. the base of a commit."""
    policy = policy or DEFAULT_POLICY
    if fmt is None:
        fmt = detect_format(path)
    want_write = {_file_identity(p) for p in writable_backing}
    want_write.discard(None)
    seen = {}
    images = []
    try:
        ident = _file_identity(path)
        if ident is None:
            raise Qcow2Error("Could not open '%s': No such file or directory" % path, path)
        img = open_image_file(path, fmt, writable=writable, force_share=force_share, policy=policy, check_mode=check_mode)
        images.append(img)
        seen[ident] = path
        while backing and img.backing_filename:
            if len(images) >= policy.max_depth:
                raise BackingChainError("Backing chain of %s is deeper than %d images; refused" % (path, policy.max_depth), path)
            if len(images) % 256 == 0:
                _ensure_fd_room(len(images) + 256)
            name = img.backing_filename
            bpath = check_backing_reference(name, img.path, policy)
            bident = _file_identity(bpath)
            if bident is None:
                raise BackingChainError("Could not open backing file '%s' of '%s': No such file or directory"
                                        % (bpath, img.path), img.path)
            if bident in seen:  # refused by policy even where qemu would open it (a layer read as raw, say)
                raise UnsafeBackingError("Backing file '%s' creates an infinite loop." % bpath, img.path)
            bfmt = _backing_format(img, bpath)
            try:
                child = open_image_file(bpath, bfmt, writable=bident in want_write, force_share=force_share, policy=policy,
                                        check_mode=check_mode)  # qemu's check flag is inherited by backing files
            except FormatError as exc:
                raise BackingChainError("Backing file '%s' of '%s' is not a valid %s image (backing format mismatch?): %s"
                                        % (bpath, img.path, bfmt, exc), img.path) from None
            except UnsafeBackingError:
                raise
            except Qcow2Error as exc:
                raise type(exc)("Could not open backing file '%s' of '%s': %s" % (bpath, img.path, exc), img.path) from None
            seen[bident] = bpath
            images.append(child)
            img.backing = child
            img = child
    except BaseException:
        for opened in images:
            opened.close()
        raise
    return Chain(images)


def _backing_format(img: Qcow2Image, bpath: str) -> str:
    fmt = img.backing_format
    if fmt == "file":
        return "raw"  # qemu's file protocol driver: the file's bytes as they are, which is what raw reads
    if fmt:
        if fmt not in ("qcow2", "raw"):
            raise UnsupportedError("Backing file '%s' of '%s' has format '%s'; only qcow2 and raw are supported"
                                   % (bpath, img.path, fmt), img.path)
        return fmt
    # No recorded format: qemu would probe. A raw file that starts like qcow2 is exactly the attack probing enables.
    if probe_is_qcow2(bpath):
        raise UnsafeBackingError(
            "Backing file '%s' of '%s' has no recorded format and looks like qcow2; refusing to probe it. Record the "
            "format first (qcow2_rebase mode=unsafe backing_format=qcow2, or qemu-img rebase -u -F qcow2)" % (bpath, img.path),
            img.path)
    return "raw"

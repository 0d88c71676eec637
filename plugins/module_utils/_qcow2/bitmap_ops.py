# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""What qemu-img bitmap does (--add, --remove, --clear, --enable, --disable, --merge), with its checks and
messages; the dirty ranges of a bitmap, of one image or merged across the layers of a chain; and whether a
bitmap can be trusted as the record of every change since it was created.

Each change returns whether it changed anything: adding a bitmap always does; clearing an empty bitmap,
enabling an enabled one, disabling a disabled one or merging bits the target already has writes nothing
(qemu would rewrite the same bits). With dry_run, every check runs and nothing is written (the image may
be open read-only). Inconsistent bitmaps (flagged in use) can only be removed, as in qemu.
"""

from __future__ import annotations

import typing

from . import constants as C
from .bitmap_bits import BitmapBits, join_ranges, set_ranges
from .bitmap_store import BitmapChange, directory_entry_size
from .bitmaps import IN_USE, TRUSTED, read_table
from .errors import BitmapUnusableError, InvalidArgumentError, UnsupportedError

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .bitmaps import Bitmap, BitmapTrust
    from .chain import Chain, Image
    from .image import Qcow2Image

MIN_GRANULARITY = 512


def default_granularity(img: Qcow2Image) -> int:
    """bdrv_get_default_bitmap_granularity(): the cluster size, at least 4 KiB, at most 64 KiB."""
    return min(65536, max(4096, img.geo.cluster_size))


def settle(img: Image) -> None:
    """Guest writes recorded so far go into the bitmaps first: every reading and change starts from them."""
    if img.format_name == "qcow2" and img.bitmaps is not None:
        img.bitmaps.finish()


def find(img: Qcow2Image, name: str) -> Bitmap | None:
    """The bitmap qemu loads under that name (trusted or in use), or None."""
    return next((b for b in img.bitmap_trust.loaded() if b.name == name), None)


def verdict_of(img: Qcow2Image, name: str) -> BitmapTrust | None:
    return next((v for v in img.bitmap_trust.verdicts if v.bitmap.name == name), None)


def _not_found(img: Image, name: str) -> BitmapUnusableError:
    return BitmapUnusableError("Dirty bitmap '%s' not found in %s" % (name, img.path), img.path, name, "not found")


def usable(img: Qcow2Image, name: str) -> Bitmap:
    """bdrv_dirty_bitmap_check(BDRV_BITMAP_DEFAULT): the bitmap exists and is consistent."""
    settle(img)
    verdict = verdict_of(img, name)
    if verdict is None:
        raise _not_found(img, name)
    if verdict.state != TRUSTED:
        raise BitmapUnusableError("Bitmap '%s' of %s is inconsistent and cannot be used (%s); remove it (qemu-img "
                                  "bitmap --remove) and start a new one" % (name, img.path, verdict.reason),
                                  img.path, name, verdict.reason)
    return verdict.bitmap


def _require_qcow2(img: Image, what: str) -> None:
    if img.format_name != "qcow2":
        raise UnsupportedError("Cannot %s: %s is a %s image, and only qcow2 images hold persistent dirty bitmaps"
                               % (what, img.path, img.format_name), img.path)


# ---- qemu-img bitmap --add / --remove / --clear / --enable / --disable / --merge ----
def add(img: Qcow2Image, name: str, granularity: int | None = None, enabled: bool = True, dry_run: bool = False) -> bool:
    """--add [-g granularity] [--disable]: a new empty bitmap; qemu's checks, in qemu's order."""
    _require_qcow2(img, "add bitmap '%s'" % name)
    if not name:
        raise InvalidArgumentError("Bitmap name cannot be empty", img.path)
    if granularity is None:
        granularity = default_granularity(img)
    elif granularity < MIN_GRANULARITY or granularity & (granularity - 1):
        raise InvalidArgumentError("Granularity must be power of 2 and at least 512 (got %d)" % granularity, img.path)
    problem = _cannot_store(img, name, granularity)
    if problem:
        raise UnsupportedError("Can't make bitmap '%s' persistent in '%s': %s" % (name, img.path, problem), img.path)
    if find(img, name) is not None:
        raise InvalidArgumentError("Bitmap already exists: %s (in %s)" % (name, img.path), img.path)
    return _change(img, dry_run, "add", name, granularity, enabled)


def _cannot_store(img: Qcow2Image, name: str, granularity: int) -> str | None:
    """qcow2_co_can_store_new_dirty_bitmap() and check_constraints_on_bitmap() of qemu 7.2: why not, or None."""
    if img.header.version < 3:
        return "Cannot store dirty bitmaps in qcow2 v2 files"
    gbits = granularity.bit_length() - 1
    if gbits > 31:
        return "Granularity exceeds maximum (%d bytes)" % (1 << 31)
    if gbits < 9:
        return "Granularity is under minimum (%d bytes)" % (1 << 9)
    size, cs = img.size, img.geo.cluster_size
    if size > 0x20000000 << gbits or size > (0x8000000 * cs) << gbits:  # BME_MAX_PHYS_SIZE, BME_MAX_TABLE_SIZE
        return "Too much space will be occupied by the bitmap. Use larger granularity"
    name_size = len(name.encode("utf-8"))
    if name_size > C.MAX_BITMAP_NAME:
        return "Name length exceeds maximum (%d characters)" % C.MAX_BITMAP_NAME
    ext = img.header.bitmaps_ext
    if ext and ext["nb_bitmaps"] >= C.MAX_BITMAPS:
        return "Maximum number of persistent bitmaps is already reached"
    if (ext["bitmap_directory_size"] if ext else 0) + directory_entry_size(name_size) > C.MAX_BITMAP_DIRECTORY_SIZE:
        return "Not enough space in the bitmap directory"
    return None


def remove(img: Qcow2Image, name: str, dry_run: bool = False) -> bool:
    """--remove: inconsistent bitmaps too (the only thing that can be done with them)."""
    _require_qcow2(img, "remove bitmap '%s'" % name)
    bitmap = find(img, name)
    if bitmap is None:
        raise _not_found(img, name)
    return _change(img, dry_run, "remove", name)


def clear(img: Qcow2Image, name: str, dry_run: bool = False) -> bool:
    """--clear: every bit off; False (nothing written) if none was set."""
    _require_qcow2(img, "clear bitmap '%s'" % name)
    bitmap = usable(img, name)
    if BitmapBits(img, bitmap, read_table(img, bitmap)).is_empty():
        return False
    return _change(img, dry_run, "clear", name)


def set_enabled(img: Qcow2Image, name: str, enabled: bool, dry_run: bool = False) -> bool:
    """--enable / --disable: whether the bitmap records guest writes (its 'auto' flag)."""
    _require_qcow2(img, "%s bitmap '%s'" % ("enable" if enabled else "disable", name))
    bitmap = usable(img, name)
    if bitmap.enabled == enabled:
        return False
    return _change(img, dry_run, "set_enabled", name, enabled)


def merge(img: Qcow2Image, target: str, source_img: Image, source_name: str, dry_run: bool = False) -> bool:
    """--merge SOURCE [-b FILE]: set in target every granule that holds a dirty byte of source (another bitmap of
    img, or of source_img); False if target had them all already."""
    _require_qcow2(img, "merge into bitmap '%s'" % target)
    bitmap = usable(img, target)
    return merge_ranges(img, bitmap, source_ranges(img, source_img, source_name), dry_run)


def source_ranges(img: Qcow2Image, source_img: Image, source_name: str) -> list[tuple[int, int]]:
    """The dirty ranges of a bitmap to merge into one of img: it must be consistent, and as large as img."""
    _require_qcow2(source_img, "merge bitmap '%s'" % source_name)
    source = usable(source_img, source_name)
    if source_img.size != img.size:
        raise InvalidArgumentError("Bitmaps are of different sizes (destination size is %d, source size is %d) and "
                                   "can't be merged (%s into %s)"
                                   % (img.size, source_img.size, source_img.path, img.path), img.path)
    return image_ranges(source_img, source)


def merge_ranges(img: Qcow2Image, bitmap: Bitmap, ranges: list[tuple[int, int]], dry_run: bool = False) -> bool:
    """Set every granule of bitmap that ranges touch; False if nothing changed."""
    if dry_run:
        return set_ranges(BitmapBits(img, bitmap, read_table(img, bitmap)), ranges)
    change = BitmapChange(img)
    if not change.merge(bitmap.name, ranges):
        return False
    change.commit()
    return True


def _change(img: Qcow2Image, dry_run: bool, edit: str, *args: typing.Any) -> bool:
    """One edit of the bitmaps (bitmap_store.BitmapChange), switched to at once; nothing with dry_run."""
    if not dry_run:
        change = BitmapChange(img)
        getattr(change, edit)(*args)
        change.commit()
    return True


# ---- dirty ranges ----
def image_ranges(img: Qcow2Image, bitmap: Bitmap) -> list[tuple[int, int]]:
    """[(start, end)] of the guest bytes one bitmap of img marks dirty."""
    settle(img)
    return BitmapBits(img, bitmap, read_table(img, bitmap)).ranges()


def backup_verdict(img: Image, name: str, need_enabled: bool = True) -> str | None:
    """None if bitmap name of img is a trustworthy record of every change since it was created, else the reason:
    it must exist, be consistent (not in use; the extension's autoclear bit set; a size, granularity and flags qemu
    accepts, which the assessment of every bitmap checks on open) and be enabled ('auto'; unless not need_enabled:
    a disabled bitmap is a consistent record of the changes up to the moment it was disabled)."""
    if img.format_name != "qcow2":
        return "%s is a %s image, which holds no bitmaps" % (img.path, img.format_name)
    if img.bitmap_trust.stale:
        return ("the bitmaps of %s are inconsistent: a program without bitmap support wrote the image after they were "
                "saved (autoclear bit 0 clear), so qemu ignores them" % img.path)
    verdict = verdict_of(img, name)
    if verdict is None:
        return "there is no bitmap '%s' in %s" % (name, img.path)
    if verdict.state != TRUSTED:
        return verdict.reason
    if need_enabled and not verdict.bitmap.enabled:
        return disabled_reason(img, name)
    return None


def disabled_reason(img: Qcow2Image, name: str) -> str:
    return "bitmap '%s' of %s is disabled (no 'auto' flag): it does not record writes" % (name, img.path)


def chain_layers(chain: Chain, name: str, from_top: bool = True, need_enabled: bool = True) -> list[Qcow2Image]:
    """The images of chain, from the top down, that hold bitmap name: they must follow each other (from the top
    image itself unless not from_top), as libvirt requires of a checkpoint's bitmaps, and each must be trustworthy;
    else BitmapUnusableError."""
    layers: list[Qcow2Image] = []
    ended_at = None
    for img in chain.images:
        present = img.format_name == "qcow2" and (img.bitmap_trust.stale or verdict_of(img, name) is not None)
        if not present:
            if not layers and (from_top or img is chain.images[-1]):
                raise BitmapUnusableError("Dirty bitmap '%s' not found in %s" % (name, img.path if from_top else
                                          "the backing chain of %s" % chain.top.path), img.path, name, "not found")
            if layers:
                ended_at = ended_at or img
            continue
        if ended_at is not None:
            raise BitmapUnusableError("Bitmap '%s' is in %s but not in %s above it: the chain of bitmaps is broken"
                                      % (name, img.path, ended_at.path), img.path, name, "broken chain of bitmaps")
        reason = backup_verdict(img, name, need_enabled)
        if reason:
            raise BitmapUnusableError("Bitmap '%s' cannot be trusted: %s" % (name, reason), img.path, name, reason)
        layers.append(img)
    return layers


def chain_ranges(chain: Chain, name: str, from_top: bool = True,
                 need_enabled: bool = True) -> tuple[list[tuple[int, int]], list[Qcow2Image]]:
    """The dirty ranges of bitmap name merged across the layers of chain that hold it (see chain_layers), clipped to
    the top's virtual size; returns (ranges, layers)."""
    layers = chain_layers(chain, name, from_top, need_enabled)
    size = chain.top.size
    ranges: list[tuple[int, int]] = []
    for img in layers:
        ranges.extend((start, min(end, size)) for start, end in image_ranges(img, find(img, name)) if start < size)
    return join_ranges(ranges), layers


def describe(img: Qcow2Image) -> list[dict]:
    """Every bitmap qemu loads from img, as a dict: name, granularity, flags, in_use, enabled, trusted, reason."""
    out = []
    for verdict in img.bitmap_trust.verdicts:
        b = verdict.bitmap
        reason = backup_verdict(img, b.name)
        out.append({"name": b.name, "granularity": b.granularity, "flags": b.flag_names(),
                    "in_use": verdict.state == IN_USE, "enabled": b.enabled, "trusted": reason is None,
                    "reason": reason})
    return out

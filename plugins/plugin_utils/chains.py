# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this plugin util is PRIVATE to the collection. It can have breaking changes at any time.
"""What the chain pictures (Mermaid text, SVG) read from a qcow2_info chain: the images and their labels."""

from __future__ import annotations

import posixpath

from ansible.errors import AnsibleFilterError

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def printable(text):
    """The text with control characters replaced by spaces."""
    return "".join(" " if (ord(ch) < 32 or ord(ch) == 127) else ch for ch in str(text))


def human_size(size):
    """Bytes in binary units with up to three significant digits: 0 bytes, 512 bytes, 64 MiB, 1.5 GiB."""
    size = int(size)
    value = float(size)
    unit = 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024.0
        unit += 1
    if unit == 0:
        return "%d bytes" % size
    text = ("%.1f" % value) if abs(value) < 100 else ("%d" % round(value))
    if text.endswith(".0"):
        text = text[:-2]
    return "%s %s" % (text, _UNITS[unit])


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def chain_of(data, who):
    """The list of images (top first) in a qcow2_info result, a chain or one image; `who` names the caller in errors."""
    if isinstance(data, dict):
        if "chain" in data:
            chain = data["chain"]
        elif "image" in data:
            chain = [data["image"]]
        elif "filename" in data:
            chain = [data]
        else:
            raise AnsibleFilterError("%s: expected a qcow2_info result (with 'chain' or 'image'), a chain or "
                                     "an image (with 'filename'); got a dictionary with keys %s"
                                     % (who, ", ".join(sorted(str(key) for key in data))))
    elif isinstance(data, (list, tuple)):
        chain = data
    else:
        raise AnsibleFilterError("%s: expected a qcow2_info result, a chain or an image; got %s"
                                 % (who, type(data).__name__))
    if not isinstance(chain, (list, tuple)):
        raise AnsibleFilterError("%s: 'chain' must be a list of images, got %s" % (who, type(chain).__name__))
    for index, image in enumerate(chain):
        if not isinstance(image, dict) or not image.get("filename"):
            raise AnsibleFilterError("%s: image %d of the chain is not a dictionary with a 'filename'" % (who, index))
    return list(chain)


def image_name(filename, full_path):
    """The file name to show: the base name, or the whole path."""
    filename = str(filename)
    return filename if full_path else (posixpath.basename(filename.rstrip("/")) or filename)


def image_details(image):
    """Format, virtual size and bytes on disk as far as known: 'qcow2, 20 GiB virtual, 196 KiB on disk'."""
    details = [str(image["format"]) if image.get("format") else "format unknown"]
    if _is_int(image.get("virtual_size")):
        details.append("%s virtual" % human_size(image["virtual_size"]))
    if _is_int(image.get("actual_size")):
        details.append("%s on disk" % human_size(image["actual_size"]))
    return ", ".join(details)


def missing_backing(chain):
    """The backing file the last image names but the chain does not hold (a chain read only in part), or None."""
    if not chain:
        return None
    return chain[-1].get("full_backing_filename") or chain[-1].get("backing_filename") or None

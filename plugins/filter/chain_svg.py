# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: chain_svg
short_description: Draw a qcow2 backing chain as an SVG picture
version_added: "0.1.0"
author:
  - backingchain.qcow2 contributors (@backingchain)
description:
  - Turns what M(backingchain.qcow2.qcow2_info) returns into an SVG picture - one box per image, the top image first,
    with an arrow from each image down to its backing file labelled with the backing format the image records.
  - Each box shows the image's file name, its format, its virtual size and, when known, the bytes it occupies on disk.
  - The picture is self-contained (no script, no style sheet, no font from outside), so it can be written into an
    HTML page or saved as an C(.svg) file and viewed offline.
  - File names are written as text, never as markup.
positional: _input
options:
  _input:
    description:
      - A registered M(backingchain.qcow2.qcow2_info) result (its RV(backingchain.qcow2.qcow2_info#module:chain) is
        used, or its RV(backingchain.qcow2.qcow2_info#module:image) when it has no chain), a chain (a list of images,
        top first), or one image.
      - An image is a dictionary with at least C(filename); C(format), C(virtual_size), C(actual_size),
        C(backing_filename), C(full_backing_filename) and C(backing_filename_format) are used when present.
      - An image may also have C(name) (text shown instead of the file name), C(note) (one more line of text) and
        C(state), which colours its box - V(normal), V(new), V(frozen) (read only while something copies it),
        V(gone) (deleted or dropped from the chain) or V(missing) (named as backing file but not read).
      - When the last image names a backing file that is not in the chain, that file is drawn as a dashed box.
    type: raw
    required: true
  title:
    description:
      - A title written above the chain.
    type: str
  writer:
    description:
      - Who writes to the top image (a VM's name), drawn above it with an arrow.
    type: str
  side:
    description:
      - Images drawn beside the chain, each with an arrow from one of its layers.
      - Each is a dictionary with C(filename) and optional C(name), C(note), C(from) (index of the layer the
        arrow starts at, top image V(0), the default), C(label) (text on the arrow) and C(dashed).
    type: list
    elements: dict
  full_path:
    description:
      - Show each image's full path instead of its base name.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Read a VM's chain
  backingchain.qcow2.qcow2_info:
    path: /var/lib/libvirt/images/vm1.qcow2
  register: vm1_info

- name: Save a picture of the chain
  ansible.builtin.copy:
    dest: /srv/reports/vm1-chain.svg
    content: "{{ vm1_info | backingchain.qcow2.chain_svg(title='vm1') }}"
    mode: "0644"
  delegate_to: localhost

- name: Show who writes, and a backup read from the chain
  ansible.builtin.copy:
    dest: /srv/reports/vm1-backup.html
    content: >-
      <!DOCTYPE html><html><body>
      {{ vm1_info | backingchain.qcow2.chain_svg(writer='vm1',
           side=[{'filename': '/srv/backups/vm1.qcow2', 'label': 'backup', 'from': 0}]) }}
      </body></html>
    mode: "0644"
  delegate_to: localhost
"""

RETURN = r"""
_value:
  description:
    - The text of an C(<svg>) element with the class C(chain-diagram), an C(aria-label) and a C(<title>) naming the
      images.
  type: str
"""

from ansible_collections.backingchain.qcow2.plugins.plugin_utils.chain_svg import chain_svg


class FilterModule:
    """backingchain.qcow2 filters."""

    def filters(self):
        return {"chain_svg": chain_svg}

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: chain_diagram
short_description: Draw a qcow2 backing chain as a Mermaid diagram
version_added: "0.1.0"
author:
  - backingchain.qcow2 contributors (@backingchain)
description:
  - Turns what M(backingchain.qcow2.qcow2_info) returns into the text of a Mermaid flowchart, one node per image (top
    first), with an arrow from each image to its backing file labelled with the backing format the image records.
  - Each node shows the image's file name, its format, its virtual size and, when known, the bytes it occupies on disk
    (RV(backingchain.qcow2.qcow2_info#module:image.actual_size)).
  - When the last image of the chain names a backing file that is not in the chain (O(backingchain.qcow2.qcow2_info#module:backing_chain=false),
    or a chain cut short), that file is drawn as a dashed node.
  - File names are escaped with Mermaid's entity codes, so quotes, C(#), angle brackets and backticks in them cannot end
    a label or the Markdown code block the diagram is put in.
positional: _input
options:
  _input:
    description:
      - A registered M(backingchain.qcow2.qcow2_info) result (its RV(backingchain.qcow2.qcow2_info#module:chain) is
        used, or its RV(backingchain.qcow2.qcow2_info#module:image) when it has no chain), a chain (a list of images,
        top first), or one image.
      - An image is a dictionary with at least C(filename); C(format), C(virtual_size), C(actual_size),
        C(backing_filename), C(full_backing_filename) and C(backing_filename_format) are used when present, as
        M(backingchain.qcow2.qcow2_info) returns them.
    type: raw
    required: true
  direction:
    description:
      - Direction of the flowchart; V(TD) draws the top image above its backing files.
    type: str
    choices: [TD, BT, LR, RL]
    default: TD
  full_path:
    description:
      - Show each image's full path instead of its base name.
    type: bool
    default: false
  title:
    description:
      - A title for the diagram, written as Mermaid front matter.
    type: str
"""

EXAMPLES = r"""
- name: Read a VM's chain
  backingchain.qcow2.qcow2_info:
    path: /var/lib/libvirt/images/vm1.qcow2
  register: vm1_info

- name: Write the chain as a Mermaid diagram into a Markdown file
  ansible.builtin.copy:
    dest: /srv/reports/vm1-chain.md
    content: |
      ```mermaid
      {{ vm1_info | backingchain.qcow2.chain_diagram(title='vm1') }}
      ```
    mode: "0644"
  delegate_to: localhost

# For a chain vm1.qcow2 -> base.qcow2 the diagram reads:
#   flowchart TD
#     n0["vm1.qcow2<br/>qcow2, 20 GiB virtual, 196 KiB on disk"]
#     n1["base.qcow2<br/>qcow2, 20 GiB virtual, 1.4 GiB on disk"]
#     n0 -->|"qcow2"| n1

- name: Draw left to right, with full paths
  ansible.builtin.debug:
    msg: "{{ vm1_info.chain | backingchain.qcow2.chain_diagram(direction='LR', full_path=true) }}"
"""

RETURN = r"""
_value:
  description:
    - Mermaid flowchart text, lines separated by newlines, without a trailing newline and without the Markdown code
      fence.
  type: str
"""

import json

from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.plugin_utils.chains import (
    chain_of,
    human_size,
    image_details,
    image_name,
    missing_backing,
    printable,
)

DIRECTIONS = ("TD", "BT", "LR", "RL")

# Mermaid entity codes for characters that would end a quoted label, start an entity, open HTML or close a Markdown
# code fence. '#' comes first so the other replacements are not escaped twice.
_ESCAPES = (
    ("#", "#35;"),
    ('"', "#quot;"),
    ("&", "#amp;"),
    ("<", "#lt;"),
    (">", "#gt;"),
    ("`", "#96;"),
)

__all__ = ("chain_diagram", "escape_label", "human_size", "FilterModule")


def escape_label(text):
    """Text that is safe inside a double-quoted Mermaid label."""
    text = printable(text)
    for char, entity in _ESCAPES:
        text = text.replace(char, entity)
    return text


def _node_label(image, full_path):
    return "%s<br/>%s" % (escape_label(image_name(image["filename"], full_path)), escape_label(image_details(image)))


def _edge_label(image):
    fmt = image.get("backing_filename_format")
    return escape_label(fmt) if fmt else "format not recorded"


def chain_diagram(data, direction="TD", full_path=False, title=None):
    """Mermaid flowchart text for a qcow2 backing chain (see DOCUMENTATION)."""
    direction = str(direction).upper()
    if direction not in DIRECTIONS:
        raise AnsibleFilterError("chain_diagram: direction must be one of %s, got %r" % (", ".join(DIRECTIONS), direction))
    chain = chain_of(data, "chain_diagram")
    lines = []
    if title:
        # Front matter is YAML: a JSON string is a valid double-quoted YAML scalar.
        lines += ["---", "title: %s" % json.dumps(printable(title)), "---"]
    lines.append("flowchart %s" % direction)
    if not chain:
        lines.append('  empty["no image"]')
        return "\n".join(lines)
    for index, image in enumerate(chain):
        lines.append('  n%d["%s"]' % (index, _node_label(image, full_path)))
    last = chain[-1]
    missing = missing_backing(chain)
    if missing:
        lines.append('  n%d["%s<br/>not read"]' % (len(chain), escape_label(image_name(missing, full_path))))
        lines.append("  style n%d stroke-dasharray: 5 5" % len(chain))
    for index, image in enumerate(chain[:-1]):
        lines.append('  n%d -->|"%s"| n%d' % (index, _edge_label(image), index + 1))
    if missing:
        lines.append('  n%d -.->|"%s"| n%d' % (len(chain) - 1, _edge_label(last), len(chain)))
    return "\n".join(lines)


class FilterModule:
    """backingchain.qcow2 filters."""

    def filters(self):
        return {"chain_diagram": chain_diagram}

"""Write an intersphinx inventory of the Ansible documentation labels that the docs site's pages link to.

The docs site is built offline: Sphinx cannot fetch docs.ansible.com's objects.inv, and without it every link
to ansible.builtin's plugins or to Ansible's reference pages is an undefined label (an error, since warnings
are errors). Those labels follow fixed patterns, so their addresses are written here from the labels that the
generated pages use; a label that matches no pattern stays undefined and fails the build, to be added below.

    python scripts/lib/ansible_docs_inventory.py RST_DIR OUTPUT.inv
"""

from __future__ import annotations

import pathlib
import re
import sys
import zlib

# Reference pages (docs.ansible.com/projects/ansible/devel/), by label.
PAGES = {
    "common_return_values": ("reference_appendices/common_return_values.html#common-return-values", "Return Values"),
    "ansible_configuration_settings": ("reference_appendices/config.html#ansible-configuration-settings",
                                       "Ansible Configuration Settings"),
}
PLUGIN = re.compile(r"^ansible_collections\.ansible\.builtin\.(\w+)_(module|filter|test|lookup|callback|connection"
                    r"|inventory|become|cache|shell|strategy|vars)$")
REF = re.compile(r":ref:`(?:[^`<]*<([^>`]+)>|([^`<>]+))`")


def entry(label: str) -> str | None:
    if label in PAGES:
        uri, title = PAGES[label]
        return "%s std:label -1 %s %s" % (label, uri, title)
    match = PLUGIN.match(label)
    if match:
        name, kind = match.groups()
        anchor = label.replace(".", "-").replace("_", "-")
        return "%s std:label -1 collections/ansible/builtin/%s_%s.html#%s ansible.builtin.%s %s" % (
            label, name, kind, anchor, name, kind)
    return None


def main(rst_dir: str, output: str) -> int:
    labels = set()
    for path in pathlib.Path(rst_dir).rglob("*.rst"):
        for explicit, bare in REF.findall(path.read_text(encoding="utf-8")):
            labels.add((explicit or bare).strip())
    lines = sorted(filter(None, (entry(label) for label in labels)))
    header = ("# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n"
              "# The remainder of this file is compressed using zlib.\n")
    pathlib.Path(output).write_bytes(header.encode() + zlib.compress(("\n".join(lines) + "\n").encode()))
    print("%s: %d Ansible documentation labels" % (output, len(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

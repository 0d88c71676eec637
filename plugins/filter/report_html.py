# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: report_html
short_description: Turn a role's report into a self-contained HTML page
version_added: "0.1.0"
author:
  - backingchain.qcow2 contributors (@backingchain)
description:
  - Renders the fleet report of the R(backingchain.qcow2.chain_flatten role,ansible_collections.backingchain.qcow2.chain_flatten_role)
    or the run summary of the R(backingchain.qcow2.snapshot_backup role,ansible_collections.backingchain.qcow2.snapshot_backup_role)
    as one HTML page, with its style, the script that sorts its tables, and pictures of the chains as inline SVG
    (see P(backingchain.qcow2.chain_svg#filter)). The page loads nothing from anywhere, so it opens offline.
  - For V(chain_flatten) - the totals, a table of the images (sortable, for example by bytes moved), a table of the
    hosts, and for each image that was flattened, planned or failed its chain before and after, side by side.
  - For V(snapshot_backup) - a table of the disks (source, action, level, bytes, virtual size, duration, depth of
    the source chain, verification, the backup file, what was recovered or deleted), and for each disk the source
    chain with the backup beside it. Columns without a value in any row are left out; an incremental backup's
    chain of backups is drawn when its manifest has one, and any other field of a manifest is listed.
  - The roles write these pages themselves (C(chain_flatten_report_dir), C(snapshot_backup_summary_file)).
positional: _input, kind
options:
  _input:
    description:
      - The report - the C(chain_flatten_report) or C(snapshot_backup_report) fact the role sets.
    type: dict
    required: true
  kind:
    description:
      - Which role's report it is.
    type: str
    required: true
    choices: [chain_flatten, snapshot_backup]
  host:
    description:
      - For V(snapshot_backup), the host the disks are on, shown in the title.
    type: str
"""

EXAMPLES = r"""
- name: Flatten, then write the fleet report as HTML too
  ansible.builtin.include_role:
    name: backingchain.qcow2.chain_flatten

- name: A copy of the report for the team's file share
  ansible.builtin.copy:
    dest: /srv/reports/flatten.html
    content: "{{ chain_flatten_report | backingchain.qcow2.report_html('chain_flatten') }}"
    mode: "0644"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
_value:
  description:
    - A whole HTML document.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.plugin_utils.html_report import backup_report_html, flatten_report_html


def report_html(report, kind, host=None):
    """An HTML page of a role's report (see DOCUMENTATION)."""
    if kind == "chain_flatten":
        return flatten_report_html(report)
    if kind == "snapshot_backup":
        return backup_report_html(report, host=host)
    raise AnsibleFilterError("report_html: kind must be chain_flatten or snapshot_backup, got %r" % (kind,))


class FilterModule:
    """backingchain.qcow2 filters."""

    def filters(self):
        return {"report_html": report_html}

# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.filter.report_html import FilterModule, report_html
from ansible_collections.backingchain.qcow2.plugins.plugin_utils.html_report import backup_report_html, flatten_report_html

GIB = 1 << 30


def image(name, backing=None, size=20 * GIB, actual=None):
    entry = {"filename": "/images/" + name, "format": "qcow2", "virtual_size": size}
    if actual is not None:
        entry["actual_size"] = actual
    if backing:
        entry.update(backing_filename=backing, full_backing_filename="/images/" + backing, backing_filename_format="qcow2")
    return entry


def flatten_row(host, name, result="flattened", moved=0, **extra):
    row = {"host": host, "image": "/images/" + name, "depth_before": 3, "depth_after": 2, "method": "commit",
           "bytes_moved": moved, "bytes_estimated": False, "duration": 1.5, "result": result, "message": "",
           "chain_before": [image(name, "s1.qcow2"), image("s1.qcow2", "base.qcow2"), image("base.qcow2")],
           "chain_after": [image(name, "base.qcow2"), image("base.qcow2")]}
    row.update(extra)
    return row


FLATTEN = {
    "generated": "2026-12-06T10:00:00Z", "check_mode": False,
    "totals": {"hosts": 2, "hosts_failed": 0, "images": 3, "unchanged": 1, "planned": 0, "flattened": 2, "skipped": 0,
               "failed": 0, "bytes_moved": 3 * GIB},
    "hosts": [{"host": "h1", "status": "ok", "max_depth": 2, "target_depth": 1, "strategy": "auto", "message": ""},
              {"host": "h2", "status": "ok", "max_depth": 2, "target_depth": 1, "strategy": "auto", "message": ""}],
    "images": [flatten_row("h1", "a.qcow2", moved=GIB), flatten_row("h2", "b.qcow2", moved=2 * GIB),
               flatten_row("h2", "c.qcow2", result="unchanged", method=None, depth_after=1, chain_before=[],
                           chain_after=[])],
}


class Page(HTMLParser):
    """Tables (header texts, rows of (text, data-sort)), svg count, and every URL-bearing attribute."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.svgs, self.urls, self.scripts = {}, 0, [], 0
        self._table = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [value for key, value in attrs.items() if key in ("src", "href") and value]
        if tag == "table":
            self._table = self.tables.setdefault(attrs["id"], {"head": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._table["rows"].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = [tag, "", attrs.get("data-sort")]
        elif tag == "svg":
            self.svgs += 1
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            kind, text, sort = self._cell
            if kind == "th":
                self._table["head"].append(text)
                self._table["rows"].pop() if self._table["rows"] == [[]] else None
            else:
                self._table["rows"][-1].append((text, sort))
            self._cell = None
        elif tag == "table":
            self._table = None


def test_flatten_report_tables_and_pictures():
    page = Page(flatten_report_html(FLATTEN))
    images = page.tables["images"]
    assert images["head"] == ["host", "image", "depth before", "depth after", "method", "bytes moved", "duration", "result"]
    assert [row[1][0] for row in images["rows"]] == ["/images/a.qcow2", "/images/b.qcow2", "/images/c.qcow2"]
    column = images["head"].index("bytes moved")
    assert [row[column] for row in images["rows"]] == [
        ("1 GiB", str(GIB)), ("2 GiB", str(2 * GIB)), ("0 bytes", "0")]
    assert page.tables["hosts"]["head"] == ["host", "status", "max depth", "target depth", "strategy"]
    assert page.svgs == 4  # before and after of the two flattened images
    assert page.urls == [] and page.scripts == 1


def test_flatten_plan_and_failures_are_said():
    report = copy.deepcopy(FLATTEN)
    report["check_mode"] = True
    report["images"][0].update(result="failed", message="locked by <qemu>")
    report["images"][1].update(result="planned", bytes_estimated=True)
    text = flatten_report_html(report)
    assert "<title>Chain flatten plan</title>" in text and "Plan (check mode)" in text
    assert '<span class="failed">failed</span>' in text and "locked by &lt;qemu&gt;" in text
    assert "planned, commit, at most 2 GiB moved" in text and "Planned (depth 2)" in text


def test_names_are_text_never_markup():
    report = copy.deepcopy(FLATTEN)
    report["images"][0]["image"] = '/x/<img src=x onerror=alert(1)>.qcow2'
    report["hosts"][0]["host"] = "<b>h1</b>"
    page = Page(flatten_report_html(report))
    assert page.urls == []
    assert '/x/<img src=x onerror=alert(1)>.qcow2' in [row[1][0] for row in page.tables["images"]["rows"]]


def backup_disk(name, action="created", **manifest):
    disk = {"name": name, "source": {"kind": "path", "path": "/images/%s.qcow2" % name}, "action": action,
            "stamp": "2026-12-06", "file": "/backups/%s/2026-12-06.qcow2" % name, "recovered": [], "deleted": [],
            "kept": ["2026-12-06"], "pinned": [], "manifest": {}}
    if action == "created":
        disk["manifest"] = dict({
            "file": disk["file"], "sizes": {"backup_bytes": 3 * GIB, "virtual": 20 * GIB},
            "duration": {"total": 12.5}, "source_chain": [image(name + ".qcow2", "base.qcow2"), image("base.qcow2")],
            "verification": {"checked": True, "result": "ok", "problems": []}, "compressed": True}, **manifest)
    return disk


def test_backup_summary_table_pictures_and_failures():
    report = {"stamp": "2026-12-06", "time": 1, "failed": ["db"], "disks": [
        backup_disk("web"), backup_disk("old", action="exists"),
        dict(backup_disk("db", action="failed"), error="cannot take the lock of /images/db.qcow2")]}
    text = backup_report_html(report, host="hv1")
    page = Page(text)
    disks = page.tables["disks"]
    # no backup has a level yet, nothing was recovered or deleted: those columns are left out
    assert disks["head"] == ["disk", "source", "action", "bytes", "virtual size", "duration", "chain depth", "verify",
                             "backup"]
    row = dict(zip(disks["head"], disks["rows"][0]))
    assert row["bytes"] == ("3 GiB", str(3 * GIB)) and row["duration"][0] == "12.5 s" and row["verify"][0] == "ok"
    assert row["chain depth"][0] == "2"
    assert dict(zip(disks["head"], disks["rows"][1]))["bytes"] == ("-", "-1")
    assert '<span class="failed">failed</span>' in text and "cannot take the lock of /images/db.qcow2" in text
    assert "<title>Backup summary of hv1</title>" in text and "1 backed up, 1 already backed up in this period, 1 failed (db)" in text
    assert page.svgs == 1 and page.urls == []
    assert "<li>compressed: True</li>" in text  # a manifest field the table does not show is listed


def test_backup_summary_shows_levels_and_backup_chains_when_present():
    incremental = backup_disk("web", level=1, chain=["/backups/web/full.qcow2", "/backups/web/2026-12-06.qcow2"],
                              parent="full")
    page = Page(backup_report_html({"stamp": "s", "disks": [incremental, backup_disk("db")]}))
    disks = page.tables["disks"]
    level = disks["head"].index("level")
    assert [row[level][0] for row in disks["rows"]] == ["1", "-"]
    assert page.svgs == 3  # two source chains, one chain of backups
    text = backup_report_html({"stamp": "s", "disks": [incremental]})
    assert "Backup chain (level 1)" in text and "<li>parent: full</li>" in text
    assert re.search(r'aria-label="Backup chain \(level 1\): full.qcow2, 2026-12-06.qcow2"', text)


@pytest.mark.parametrize("kind, report, message", [
    ("chain_flatten", {"hosts": []}, r"flatten_report_html: expected a report with totals, hosts, images, got keys hosts"),
    ("snapshot_backup", [], r"backup_report_html: expected a report with disks, got list"),
    ("other", {}, r"kind must be chain_flatten or snapshot_backup, got 'other'"),
])
def test_bad_reports_are_refused_by_name(kind, report, message):
    with pytest.raises(AnsibleFilterError, match=message):
        report_html(report, kind)


def test_the_filter_serves_both():
    assert FilterModule().filters() == {"report_html": report_html}
    assert report_html(FLATTEN, "chain_flatten") == flatten_report_html(FLATTEN)

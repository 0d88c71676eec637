# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this plugin util is PRIVATE to the collection. It can have breaking changes at any time.
"""Self-contained HTML pages for the roles' reports: the chain_flatten fleet report, the snapshot_backup run summary.

A page carries its style, a few lines of script that sort its tables, and its chain pictures as inline SVG
(chain_svg); it loads nothing, so it opens offline, from a mail attachment or a file share. Tables are data
driven: a column shows when some row has a value for it, and the backup summary lists any further field of a
backup's manifest, so what later versions of the roles record appears without a change here.
"""

from __future__ import annotations

from html import escape

from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.plugin_utils.chain_svg import chain_svg
from ansible_collections.backingchain.qcow2.plugins.plugin_utils.chains import human_size, printable

_STYLE = """
body { font-family: DejaVu Sans, Verdana, Arial, sans-serif; color: #1d2033; margin: 24px; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; } h3 { font-size: 15px; margin-bottom: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #c9cfdb; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f7; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.number { text-align: right; white-space: nowrap; }
.failed { color: #a31515; font-weight: bold; } .summary { font-size: 14px; }
.pictures { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.details { font-size: 13px; color: #444; }
"""

# Click a column header: rows sort by the cells' data-sort values (numbers as numbers); a second click reverses.
_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.from(body.rows);
      function key(row) {
        var value = row.cells[column].getAttribute('data-sort');
        return th.classList.contains('number') ? parseFloat(value) : value;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _text(value):
    return escape(printable(value))


def _seconds(value):
    return "%.1f s" % float(value)


class Column:
    """A table column: its title, how to get a row's value, how to show it; numeric columns sort as numbers."""

    def __init__(self, title, get, show=_text, number=False):
        self.title, self.get, self.show, self.number = title, get, show, number

    def value(self, row):
        try:
            return self.get(row)
        except (KeyError, TypeError, AttributeError, IndexError):
            return None


def table(columns, rows, table_id):
    """A sortable table of the columns that have a value in some row; missing values show as '-'."""
    columns = [column for column in columns if any(column.value(row) not in (None, "", [], {}) for row in rows)]
    head = "".join('<th%s>%s</th>' % (' class="number"' if column.number else "", _text(column.title))
                   for column in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = column.value(row)
            missing = value in (None, "", [], {})
            sort = (-1 if missing else value) if column.number else ("" if missing else printable(value))
            shown = "-" if missing else column.show(value)
            cells.append('<td%s data-sort="%s">%s</td>'
                         % (' class="number"' if column.number else "", escape(str(sort)), shown))
        body.append("<tr>%s</tr>" % "".join(cells))
    return ('<table class="sortable" id="%s"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>'
            % (escape(table_id), head, "".join(body)))


def page(title, summary, sections):
    """A whole HTML document."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<title>%s</title><style>%s</style></head><body><h1>%s</h1><p class="summary">%s</p>%s'
            '<script>%s</script></body></html>\n'
            % (_text(title), _STYLE, _text(title), summary, "".join(sections), _SCRIPT))


def _require(report, keys, who):
    if not isinstance(report, dict) or any(key not in report for key in keys):
        raise AnsibleFilterError("%s: expected a report with %s, got %s"
                                 % (who, ", ".join(keys), type(report).__name__ if not isinstance(report, dict)
                                    else "keys " + ", ".join(sorted(str(key) for key in report))))


def _bytes_moved(row):
    return ("at most " if row.get("bytes_estimated") else "") + human_size(row["bytes_moved"])


def flatten_report_html(report):
    """The chain_flatten role's fleet report (its chain_flatten_report fact) as an HTML page."""
    _require(report, ("totals", "hosts", "images"), "flatten_report_html")
    totals = report["totals"]
    plan = bool(report.get("check_mode"))
    summary = ("%s %s image(s) on %s host(s): %s flattened, %s planned, %s unchanged, %s skipped, %s failed; %s moved."
               " Generated %s by Ansible."
               % ("Plan (check mode): nothing was changed; bytes are what would move." if plan else "Run.",
                  totals["images"], totals["hosts"], totals["flattened"], totals["planned"], totals["unchanged"],
                  totals["skipped"], totals["failed"], human_size(totals["bytes_moved"]), report.get("generated", "")))
    images = [
        Column("host", lambda r: r["host"]),
        Column("image", lambda r: r["image"]),
        Column("domain", lambda r: "%s, disk %s%s" % (r["domain"], r["disk"], ", running" if r.get("live") else "")
               if r.get("domain") else None),
        Column("depth before", lambda r: r["depth_before"], number=True),
        Column("depth after", lambda r: r["depth_after"], number=True),
        Column("method", lambda r: r["method"]),
        Column("bytes moved", lambda r: int(r["bytes_moved"]), lambda v: escape(human_size(v)), number=True),
        Column("duration", lambda r: float(r["duration"]), _seconds, number=True),
        Column("result", lambda r: r["result"],
               lambda v: '<span class="failed">%s</span>' % _text(v) if v == "failed" else _text(v)),
        Column("message", lambda r: r["message"]),
    ]
    hosts = [
        Column("host", lambda h: h["host"]),
        Column("status", lambda h: h["status"]),
        Column("max depth", lambda h: h["max_depth"], number=True),
        Column("target depth", lambda h: h["target_depth"], number=True),
        Column("strategy", lambda h: h["strategy"]),
        Column("message", lambda h: h["message"]),
    ]
    sections = ["<h2>Images</h2>", table(images, report["images"], "images"),
                "<h2>Hosts</h2>", table(hosts, report["hosts"], "hosts")]
    changed = [row for row in report["images"] if row.get("result") in ("flattened", "planned", "failed")
               and row.get("chain_before")]
    if changed:
        sections.append("<h2>Chains before and after</h2>")
    for row in changed:
        after = "Planned" if row["result"] == "planned" else "After"
        sections.append('<section class="chains"><h3>%s: %s</h3><p class="details">%s%s, %s moved</p>'
                        '<div class="pictures">%s%s</div></section>'
                        % (_text(row["host"]), _text(row["image"]), _text(row["result"]),
                           ", " + _text(row["method"]) if row.get("method") else "", escape(_bytes_moved(row)),
                           chain_svg(row["chain_before"], title="Before (depth %s)" % row.get("depth_before")),
                           chain_svg(row.get("chain_after") or [], title="%s (depth %s)" % (after, row.get("depth_after")))))
    title = "Chain flatten %s" % ("plan" if plan else "report")
    return page(title, _text(summary), sections)


# Fields of a disk's report or manifest that the backup summary shows in its table or pictures, or that say
# nothing to a reader (Unix time next to created_iso, the manifest's format version); any other scalar field is
# listed below the disk's picture.
_SHOWN = {"name", "source", "action", "stamp", "file", "manifest", "error", "recovered", "deleted", "kept", "level",
          "chain", "sizes", "duration", "verification", "source_chain", "created", "format"}


def _source(disk):
    source = disk.get("source") or {}
    if source.get("kind") == "domain" or source.get("domain"):
        return "domain %s, disk %s" % (source.get("domain"), source.get("disk"))
    return source.get("path")


def _verify(disk):
    verification = disk["manifest"]["verification"]
    if not verification.get("checked", True):
        return "not checked"
    problems = verification.get("problems") or []
    return verification.get("result", "?") + (": " + "; ".join(str(p) for p in problems) if problems else "")


def _backup_chain(manifest):
    """The chain of backups this one needs (an incremental backup's), as images for chain_svg."""
    return [item if isinstance(item, dict) else {"filename": str(item)} for item in manifest.get("chain") or []]


def _disk_section(disk):
    manifest = disk.get("manifest") or {}
    pictures = []
    if manifest.get("source_chain"):
        side = [{"filename": disk.get("file") or manifest.get("file"), "note": "the backup", "label": "exported"}]
        pictures.append(chain_svg(manifest["source_chain"], title="Source chain", side=side))
    backup_chain = _backup_chain(manifest)
    if backup_chain:
        pictures.append(chain_svg(backup_chain, title="Backup chain (level %s)" % manifest.get("level", "?")))
    extra = [(key, value) for source in (disk, manifest) for key, value in sorted(source.items())
             if key not in _SHOWN and isinstance(value, (str, int, float, bool)) and value not in ("", None)]
    if disk.get("error"):
        extra.insert(0, ("error", disk["error"]))
    details = "".join("<li>%s: %s</li>" % (_text(key), _text(value)) for key, value in extra)
    return ('<section class="disk"><h3>%s</h3><div class="pictures">%s</div><ul class="details">%s</ul></section>'
            % (_text(disk.get("name")), "".join(pictures), details))


def backup_report_html(report, host=None):
    """The snapshot_backup role's run summary (its snapshot_backup_report fact) as an HTML page."""
    _require(report, ("disks",), "backup_report_html")
    disks = report["disks"]
    failed = [disk.get("name") for disk in disks if disk.get("action") == "failed"]
    summary = "%d disk(s)%s, period %s: %d backed up, %d already backed up in this period, %d failed%s." % (
        len(disks), " on %s" % host if host else "", report.get("stamp", "?"),
        sum(disk.get("action") == "created" for disk in disks), sum(disk.get("action") == "exists" for disk in disks),
        len(failed), " (%s)" % ", ".join(str(name) for name in failed) if failed else "")
    columns = [
        Column("disk", lambda d: d["name"]),
        Column("source", _source),
        Column("action", lambda d: d["action"],
               lambda v: '<span class="failed">%s</span>' % _text(v) if v == "failed" else _text(v)),
        Column("level", lambda d: d["manifest"]["level"]),
        Column("bytes", lambda d: int(d["manifest"]["sizes"]["backup_bytes"]), lambda v: escape(human_size(v)),
               number=True),
        Column("virtual size", lambda d: int(d["manifest"]["sizes"]["virtual"]), lambda v: escape(human_size(v)),
               number=True),
        Column("duration", lambda d: float(d["manifest"]["duration"]["total"]), _seconds, number=True),
        Column("chain depth", lambda d: len(d["manifest"]["source_chain"]), number=True),
        Column("verify", _verify),
        Column("backup", lambda d: d["file"] if d["action"] != "failed" else None),
        Column("recovered", lambda d: ", ".join(d["recovered"])),
        Column("deleted by retention", lambda d: ", ".join(d["deleted"])),
    ]
    sections = ["<h2>Disks</h2>", table(columns, disks, "disks"), "<h2>Chains</h2>"]
    sections += [_disk_section(disk) for disk in disks]
    return page("Backup summary%s" % (" of %s" % host if host else ""), _text(summary), sections)

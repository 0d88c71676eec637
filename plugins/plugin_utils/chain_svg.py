# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this plugin util is PRIVATE to the collection. It can have breaking changes at any time.
"""A qcow2 backing chain drawn as a self-contained SVG picture (no script, no fonts or styles from outside).

One column of boxes, the top image first, an arrow from each image down to its backing file. Besides what
qcow2_info returns for each image, an image may carry `name` (shown instead of its file name), `note` (one
more line of text) and `state`, which
colours the box: `new`, `frozen` (read only while something copies it), `gone` (deleted or dropped from the
chain) or `missing` (named as backing file but not read). `writer` draws who writes to the top image (a VM);
`also` draws more chains (linked clones) in columns to the right, joined to the first image they share with
the chain (the same filename); `side` draws images beside the chain with an arrow from one of its layers (a
backup read from it, a commit into it).
"""

from __future__ import annotations

import math
from html import escape

from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.plugin_utils.chains import (
    chain_of,
    image_details,
    image_name,
    missing_backing,
    printable,
)

# fill, stroke, text colour, dashed outline
STATES = {
    "normal": ("#eaf1fb", "#3367a6", "#15233a", False),
    "new": ("#e6f4e8", "#2e7d32", "#12301a", False),
    "frozen": ("#e4e6ef", "#4a5170", "#1d2033", False),
    "gone": ("#f4f4f4", "#9a9a9a", "#6b6b6b", True),
    "missing": ("#ffffff", "#9a9a9a", "#555555", True),
    "side": ("#fff6dc", "#b7791f", "#3a2a08", False),
}
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
# Average advance of a character in the font above, per pixel of font size: generous, so text fits the box
# in any of the fonts without measuring it.
_CHAR_WIDTH = 0.62
_NAME_SIZE, _TEXT_SIZE, _TITLE_SIZE = 13, 11, 14
_LINE, _PAD, _ROW_GAP, _COLUMN_GAP, _MARGIN, _WRITER = 16, 9, 38, 40, 10, 62


def _text_width(text, size, bold=False):
    return len(text) * size * (_CHAR_WIDTH + (0.06 if bold else 0))


def _lines(image, full_path):
    """The text lines of a box: name (bold), then the details, then the note."""
    name = printable(image.get("name") or image_name(image["filename"], full_path))
    if image.get("state") == "missing":
        details = "not read"
    elif any(key in image for key in ("format", "virtual_size", "actual_size")):
        details = image_details(image)
    else:
        details = None
    return [name] + [printable(text) for text in (details, image.get("note")) if text]


def _box_height(lines):
    return 2 * _PAD + _LINE * len(lines)


def _box_width(lines):
    widths = [_text_width(lines[0], _NAME_SIZE, bold=True)] + [_text_width(text, _TEXT_SIZE) for text in lines[1:]]
    return max(widths) + 2 * _PAD


def _box(out, x, y, width, lines, state):
    fill, stroke, color, dashed = STATES[state]
    out.append('<rect x="%g" y="%g" width="%g" height="%g" rx="6" fill="%s" stroke="%s" stroke-width="1.5"%s/>'
               % (x, y, width, _box_height(lines), fill, stroke, ' stroke-dasharray="5 4"' if dashed else ""))
    for index, text in enumerate(lines):
        baseline = y + _PAD + _LINE * index + 12
        weight = ' font-weight="bold"' if index == 0 else ""
        size = _NAME_SIZE if index == 0 else _TEXT_SIZE
        out.append('<text x="%g" y="%g" font-size="%d"%s fill="%s">%s</text>'
                   % (x + _PAD, baseline, size, weight, color, escape(text)))


def _arrow(out, start, end, label=None, dashed=False, color="#444444"):
    """A straight arrow from start to end (x, y), its head at end, the label beside its middle."""
    (x1, y1), (x2, y2) = start, end
    out.append('<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="1.5"%s/>'
               % (x1, y1, x2, y2, color, ' stroke-dasharray="5 4"' if dashed else ""))
    angle = math.atan2(y2 - y1, x2 - x1)
    corners = [(x2 - 8 * math.cos(angle + turn), y2 - 8 * math.sin(angle + turn)) for turn in (0.45, -0.45)]
    out.append('<polygon points="%g,%g %.1f,%.1f %.1f,%.1f" fill="%s"/>'
               % (x2, y2, corners[0][0], corners[0][1], corners[1][0], corners[1][1], color))
    if label:
        middle_x, middle_y = (x1 + x2) / 2, (y1 + y2) / 2
        if abs(y2 - y1) < 1:  # horizontal: the label above the line
            out.append('<text x="%g" y="%g" font-size="%d" fill="#444444" text-anchor="middle">%s</text>'
                       % (middle_x, middle_y - 6, _TEXT_SIZE, escape(printable(label))))
        else:
            out.append('<text x="%g" y="%g" font-size="%d" fill="#444444">%s</text>'
                       % (middle_x + 8, middle_y + 4, _TEXT_SIZE, escape(printable(label))))


def _check_state(state, where):
    if state not in STATES:
        raise AnsibleFilterError("chain_svg: %s has state %r; use one of %s"
                                 % (where, state, ", ".join(sorted(s for s in STATES if s != "side"))))


def _chain(data, where):
    chain = chain_of(data, "chain_svg")
    for index, image in enumerate(chain):
        _check_state(image.get("state", "normal"), "%simage %d" % (where, index))
    missing = missing_backing(chain)
    return chain + [{"filename": missing, "state": "missing"}] if missing else chain


class _Grid:
    """Boxes in columns and rows, and the arrows between them; rows may be negative until drawn."""

    def __init__(self, full_path):
        self.full_path = full_path
        self.cells = {}  # (column, row) -> (lines, state)
        self.arrows = []  # (from cell, to cell, label, dashed)
        self.labels = {}  # column -> widest arrow label leading into it from the left

    def add(self, column, row, image, state=None):
        self.cells[column, row] = (_lines(image, self.full_path), state or image.get("state", "normal"))

    def place_chain(self, column, chain, first_row, join=None):
        """Chain images in a column from first_row down; the last one's arrow goes to `join` (a cell) if given."""
        cells = [(column, first_row + index) for index in range(len(chain))]
        for cell, image in zip(cells, chain):
            self.add(cell[0], cell[1], image)
        targets = cells[1:] + ([join] if join else [])
        for index, target in enumerate(targets):
            dashed = target != join and chain[index + 1].get("state") in ("missing", "gone")
            self.arrows.append((cells[index], target, chain[index].get("backing_filename_format"), dashed))
        return cells

    def draw(self, body, top):
        """Draw the boxes and arrows below y=top; returns (width, height) of what was drawn, and the cell boxes."""
        rows = sorted({row for _column, row in self.cells})
        columns = sorted({column for column, _row in self.cells})
        heights = {row: max(_box_height(lines) for (_c, r), (lines, _s) in self.cells.items() if r == row)
                   for row in rows}
        widths = {column: max([_box_width(lines) for (c, _r), (lines, _s) in self.cells.items() if c == column]
                              + [160 if column == 0 else 120]) for column in columns}
        ys, y = {}, top
        for row in range(rows[0], rows[-1] + 1):
            ys[row] = y
            y += heights.get(row, 0) + (_ROW_GAP if row in heights else 0)
        xs, x = {}, _MARGIN
        for column in range(columns[0], columns[-1] + 1):
            x += self.labels.get(column, _COLUMN_GAP) if column != columns[0] else 0
            xs[column] = x
            x += widths.get(column, 0)
        boxes = {}
        for (column, row), (lines, state) in sorted(self.cells.items()):
            boxes[column, row] = (xs[column], ys[row], widths[column], _box_height(lines))
            _box(body, xs[column], ys[row], widths[column], lines, state)
        for source, target, label, dashed in self.arrows:
            (x1, y1, w1, h1), (x2, y2, w2, _h2) = boxes[source], boxes[target]
            if source[1] == target[1]:  # beside: from the right edge to the left edge
                _arrow(body, (x1 + w1, y1 + 20), (x2, y2 + 20), label, dashed)
            else:
                _arrow(body, (x1 + w1 / 2, y1 + h1), (x2 + w2 / 2, y2), label, dashed)
        return x - _MARGIN, y - _ROW_GAP, boxes


def _place_side(grid, main, side, depth):
    """Side images in column 1, each level with the layer its arrow starts at (or below the one before)."""
    for index, item in enumerate(side):
        if not isinstance(item, dict) or not item.get("filename"):
            raise AnsibleFilterError("chain_svg: side item %d is not a dictionary with a 'filename'" % index)
        layer = int(item.get("from", 0))
        if not 0 <= layer < len(main):
            raise AnsibleFilterError("chain_svg: side item %d starts at layer %s, but the chain has %d"
                                     % (index, item.get("from"), depth))
        row = main[layer][1]
        while (1, row) in grid.cells:
            row += 1
        grid.add(1, row, item, "side")
        grid.arrows.append((main[layer], (1, row), item.get("label"), bool(item.get("dashed"))))
        label_gap = _text_width(printable(item.get("label") or ""), _TEXT_SIZE) + 30
        grid.labels[1] = max(grid.labels.get(1, _COLUMN_GAP), label_gap)


def chain_svg(data, title=None, writer=None, side=None, also=None, full_path=False):
    """SVG text (an <svg> element with class chain-diagram) picturing a backing chain; see the module docstring.

    data: a qcow2_info result, a chain (images, top first) or one image. also: more such chains. side: a list of
    dictionaries with `filename`, optional `name`, `note`, `from` (index of the layer the arrow starts at,
    default 0), `label` and `dashed`. Raises AnsibleFilterError on input it cannot draw.
    """
    chain = _chain(data, "")
    grid = _Grid(full_path)
    if chain:
        main = grid.place_chain(0, chain, 0)
    else:
        grid.add(0, 0, {"filename": "no image"}, "missing")
        main = [(0, 0)]
    # Side images right beside the chain, so their arrows cross no other column; linked clones after them
    # (their arrows into the chain run in the gaps between rows).
    _place_side(grid, main, side or [], len(chain))
    where = {image["filename"]: cell for image, cell in zip(chain, main)}
    for number, other in enumerate(also or []):
        other = _chain(other, "chain %d of also, " % number)
        column = max(c for c, _r in grid.cells) + 1
        shared = next((index for index, image in enumerate(other) if image["filename"] in where), None)
        if shared is None:
            cells = grid.place_chain(column, other, 0)
        else:
            join = where[other[shared]["filename"]]
            cells = grid.place_chain(column, other[:shared], join[1] - shared, join)
        where.update((image["filename"], cell) for image, cell in zip(other, cells))

    body = []
    y = _MARGIN
    width = 0.0
    if title:
        body.append('<text x="%g" y="%g" font-size="%d" font-weight="bold" fill="#222222">%s</text>'
                    % (_MARGIN, y + _TITLE_SIZE, _TITLE_SIZE, escape(printable(title))))
        width = _text_width(printable(title), _TITLE_SIZE, bold=True)
        y += _TITLE_SIZE + 12
    writer_top = y
    if writer:
        y += _WRITER
    grid_width, bottom, boxes = grid.draw(body, y)
    if writer:
        x, top, column_width, _height = boxes[main[0]]
        label = printable(writer)
        pill = _text_width(label, _TEXT_SIZE) + 2 * _PAD
        body.append('<rect x="%g" y="%g" width="%g" height="24" rx="12" fill="#ffffff" stroke="#555555"/>'
                    % (x + (column_width - pill) / 2, writer_top, pill))
        body.append('<text x="%g" y="%g" font-size="%d" text-anchor="middle" fill="#222222">%s</text>'
                    % (x + column_width / 2, writer_top + 16, _TEXT_SIZE, escape(label)))
        _arrow(body, (x + column_width / 2, writer_top + 24), (x + column_width / 2, top), "writes")
    total_width, total_height = max(width, grid_width) + 2 * _MARGIN, bottom + _MARGIN
    names = ", ".join(printable(image.get("name") or image_name(image["filename"], full_path))
                      for image in chain) or "no image"
    label = "%s: %s" % (printable(title), names) if title else "Backing chain: %s" % names
    return ('<svg xmlns="http://www.w3.org/2000/svg" class="chain-diagram" role="img" aria-label="%s" '
            'width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s">'
            '<title>%s</title>%s</svg>'
            % (escape(label), math.ceil(total_width), math.ceil(total_height), math.ceil(total_width),
               math.ceil(total_height), FONT, escape(label), "".join(body)))

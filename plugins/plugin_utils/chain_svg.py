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
`side` draws images beside the chain with an arrow from one of its layers (a backup read from it, a commit
into it).
"""

from __future__ import annotations

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
_LINE, _PAD, _GAP, _MARGIN, _SIDE_GAP = 16, 9, 38, 10, 120


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


def _arrow(out, x1, y1, x2, y2, label=None, dashed=False, color="#444444"):
    """A straight arrow (vertical or horizontal) with its head at (x2, y2) and the label beside it."""
    out.append('<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="1.5"%s/>'
               % (x1, y1, x2, y2, color, ' stroke-dasharray="5 4"' if dashed else ""))
    if x1 == x2:
        step = 7 if y2 > y1 else -7
        head = (x2, y2, x2 - 5, y2 - step, x2 + 5, y2 - step)
    else:
        step = 7 if x2 > x1 else -7
        head = (x2, y2, x2 - step, y2 - 5, x2 - step, y2 + 5)
    out.append('<polygon points="%g,%g %g,%g %g,%g" fill="%s"/>' % (head + (color,)))
    if label:
        if x1 == x2:
            out.append('<text x="%g" y="%g" font-size="%d" fill="#444444">%s</text>'
                       % (x1 + 8, (y1 + y2) / 2 + 4, _TEXT_SIZE, escape(printable(label))))
        else:
            out.append('<text x="%g" y="%g" font-size="%d" fill="#444444" text-anchor="middle">%s</text>'
                       % ((x1 + x2) / 2, y1 - 6, _TEXT_SIZE, escape(printable(label))))


def _check_state(state, where):
    if state not in STATES:
        raise AnsibleFilterError("chain_svg: %s has state %r; use one of %s"
                                 % (where, state, ", ".join(sorted(s for s in STATES if s != "side"))))


def chain_svg(data, title=None, writer=None, side=None, full_path=False):
    """SVG text (an <svg> element with class chain-diagram) picturing a backing chain; see the module docstring.

    data: a qcow2_info result, a chain (images, top first) or one image. side: a list of dictionaries with
    `filename`, optional `note`, `from` (index of the layer the arrow starts at, default 0), `label` and
    `dashed`. Raises AnsibleFilterError on input it cannot draw.
    """
    chain = chain_of(data, "chain_svg")
    for index, image in enumerate(chain):
        _check_state(image.get("state", "normal"), "image %d" % index)
    missing = missing_backing(chain)
    if missing:
        chain = chain + [{"filename": missing, "state": "missing"}]
    side = list(side or [])
    for index, item in enumerate(side):
        if not isinstance(item, dict) or not item.get("filename"):
            raise AnsibleFilterError("chain_svg: side item %d is not a dictionary with a 'filename'" % index)
        if not 0 <= int(item.get("from", 0)) < max(len(chain), 1):
            raise AnsibleFilterError("chain_svg: side item %d starts at layer %s, but the chain has %d"
                                     % (index, item.get("from"), len(chain)))

    body = []
    y = _MARGIN
    width = 0.0
    if title:
        body.append('<text x="%g" y="%g" font-size="%d" font-weight="bold" fill="#222222">%s</text>'
                    % (_MARGIN, y + _TITLE_SIZE, _TITLE_SIZE, escape(printable(title))))
        width = _text_width(printable(title), _TITLE_SIZE, bold=True)
        y += _TITLE_SIZE + 12
    layer_lines = [_lines(image, full_path) for image in chain] or [["no image"]]
    column = max([_box_width(lines) for lines in layer_lines] + [160])
    x = _MARGIN
    if writer:
        label = printable(writer)
        pill = _text_width(label, _TEXT_SIZE) + 2 * _PAD
        body.append('<rect x="%g" y="%g" width="%g" height="24" rx="12" fill="#ffffff" stroke="#555555"/>'
                    % (x + (column - pill) / 2, y, pill))
        body.append('<text x="%g" y="%g" font-size="%d" text-anchor="middle" fill="#222222">%s</text>'
                    % (x + column / 2, y + 16, _TEXT_SIZE, escape(label)))
        _arrow(body, x + column / 2, y + 24, x + column / 2, y + 24 + _GAP - 8, "writes")
        y += 24 + _GAP - 8
    tops = []
    for index, lines in enumerate(layer_lines):
        state = chain[index].get("state", "normal") if chain else "missing"
        if index:
            previous = chain[index - 1]
            _arrow(body, x + column / 2, y, x + column / 2, y + _GAP, previous.get("backing_filename_format"),
                   dashed=chain[index].get("state") in ("missing", "gone"))
            y += _GAP
        tops.append(y)
        _box(body, x, y, column, lines, state)
        y += _box_height(lines)
    width = max(width, column)
    gap = max([_SIDE_GAP] + [_text_width(str(item.get("label") or ""), _TEXT_SIZE) + 30 for item in side])
    side_x = x + column + gap
    for item in side:
        row = int(item.get("from", 0))
        lines = _lines(item, full_path)
        top = tops[row] if tops else _MARGIN
        _arrow(body, x + column, top + 20, side_x, top + 20, item.get("label"), dashed=bool(item.get("dashed")))
        _box(body, side_x, top, _box_width(lines), lines, "side")
        width = max(width, column + gap + _box_width(lines))
        y = max(y, top + _box_height(lines))
    total_width, total_height = width + 2 * _MARGIN, y + _MARGIN
    names = ", ".join(printable(image.get("name") or image_name(image["filename"], full_path))
                      for image in chain) or "no image"
    label = "%s: %s" % (printable(title), names) if title else "Backing chain: %s" % names
    return ('<svg xmlns="http://www.w3.org/2000/svg" class="chain-diagram" role="img" aria-label="%s" '
            'width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s">'
            '<title>%s</title>%s</svg>'
            % (escape(label), total_width, total_height, total_width, total_height, FONT, escape(label),
               "".join(body)))

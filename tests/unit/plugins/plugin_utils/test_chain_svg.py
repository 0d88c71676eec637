# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_info
from ansible_collections.backingchain.qcow2.plugins.plugin_utils.chain_svg import STATES, chain_svg
from ansible_collections.backingchain.qcow2.tests.unit.plugins.filter.test_chain_diagram import BASE, TOP
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, make_image
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_ok

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg):
    """(root, boxes, arrows, texts): boxes are (rect, [its text lines]) top to bottom, arrows the lines."""
    root = ET.fromstring(svg)
    rects = [r for r in root.iter(SVG + "rect") if r.get("rx") == "6"]
    texts = list(root.iter(SVG + "text"))

    def inside(text, rect):
        x, y = float(text.get("x")), float(text.get("y"))
        left, top = float(rect.get("x")), float(rect.get("y"))
        return left <= x <= left + float(rect.get("width")) and top <= y <= top + float(rect.get("height"))

    boxes = [(rect, [t.text for t in texts if inside(t, rect)]) for rect in rects]
    return root, boxes, list(root.iter(SVG + "line")), [t.text for t in texts]


def test_one_box_per_image_top_first_with_its_details():
    root, boxes, arrows, texts = parse(chain_svg([TOP, BASE]))
    assert root.get("class") == "chain-diagram" and root.get("role") == "img"
    assert [lines for _rect, lines in boxes] == [
        ["vm1.qcow2", "qcow2, 20 GiB virtual, 196 KiB on disk"],
        ["base.qcow2", "qcow2, 20 GiB virtual, 1.4 GiB on disk"],
    ]
    assert float(boxes[0][0].get("y")) < float(boxes[1][0].get("y"))
    assert len(arrows) == 1 and "qcow2" in texts  # the backing format labels the arrow
    assert root.find(SVG + "title").text == "Backing chain: vm1.qcow2, base.qcow2"


def test_every_box_fits_the_picture():
    root, boxes, _arrows, _texts = parse(chain_svg([TOP, BASE], title="t", writer="vm1",
                                                   side=[{"filename": "/b/long-backup-name.qcow2", "label": "read"}]))
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox") == "0 0 %d %d" % (width, height)
    for rect, _lines in boxes:
        assert float(rect.get("x")) + float(rect.get("width")) <= width
        assert float(rect.get("y")) + float(rect.get("height")) <= height


def test_a_backing_file_outside_the_chain_is_a_dashed_box_not_read():
    _root, boxes, arrows, _texts = parse(chain_svg({"changed": False, "image": TOP}))
    assert boxes[1][1] == ["base.qcow2", "not read"]
    assert boxes[1][0].get("stroke-dasharray") and arrows[0].get("stroke-dasharray")
    assert boxes[0][0].get("stroke-dasharray") is None


@pytest.mark.parametrize("state", sorted(s for s in STATES if s != "missing"))
def test_states_colour_the_box(state):
    _root, boxes, _arrows, _texts = parse(chain_svg([{"filename": "a.qcow2", "state": state, "note": "why"}]))
    fill, stroke, _color, dashed = STATES[state]
    rect, lines = boxes[0]
    assert (rect.get("fill"), rect.get("stroke"), bool(rect.get("stroke-dasharray"))) == (fill, stroke, dashed)
    assert lines == ["a.qcow2", "why"]


def test_unknown_state_is_refused_by_name():
    with pytest.raises(AnsibleFilterError, match=r"image 1 has state 'hot'; use one of frozen, gone, missing, new, normal"):
        chain_svg([TOP, dict(BASE, state="hot")])


def test_writer_and_side_images():
    side = [{"filename": "/srv/backups/web1-vda/2026-01-31.qcow2", "name": "web1-vda/2026-01-31.qcow2", "from": 1,
             "label": "read", "note": "standalone"}]
    _root, boxes, arrows, texts = parse(chain_svg([TOP, BASE], writer="web1", side=side))
    assert "web1" in texts and "writes" in texts and "read" in texts
    chain_box, side_box = boxes[1][0], boxes[2][0]
    assert boxes[2][1] == ["web1-vda/2026-01-31.qcow2", "standalone"]
    assert float(side_box.get("x")) > float(chain_box.get("x")) + float(chain_box.get("width"))
    assert side_box.get("y") == chain_box.get("y")  # beside the layer it is read from
    assert len(arrows) == 3  # writes, backing file, read


@pytest.mark.parametrize("side, message", [
    ([{"filename": "b", "from": 2}], "side item 0 starts at layer 2, but the chain has 2"),
    (["b"], "side item 0 is not a dictionary with a 'filename'"),
])
def test_bad_side_items_are_refused(side, message):
    with pytest.raises(AnsibleFilterError, match=message):
        chain_svg([TOP, BASE], side=side)


def test_names_are_text_never_markup():
    hostile = {"filename": '/x/<script>alert(1)<script>&"q.qcow2', "note": "</svg><b>"}
    root, boxes, _arrows, _texts = parse(chain_svg([hostile], title="<i>t</i>", writer="<vm>"))
    assert boxes[0][1] == ['<script>alert(1)<script>&"q.qcow2', "</svg><b>"]
    assert root.get("aria-label") == '<i>t</i>: <script>alert(1)<script>&"q.qcow2'
    assert not list(root.iter(SVG + "script")) and not list(root.iter("script"))


def test_control_characters_become_spaces():
    _root, boxes, _arrows, _texts = parse(chain_svg([{"filename": "a\nb\x00.qcow2"}]))
    assert boxes[0][1] == ["a b .qcow2"]


def test_empty_chain_is_one_box():
    _root, boxes, arrows, _texts = parse(chain_svg([]))
    assert [lines for _rect, lines in boxes] == [["no image"]] and not arrows


def test_a_chain_read_by_qcow2_info(tmp_path):
    make_image(tmp_path / "base.qcow2", size=8 * MIB)
    top = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    _root, boxes, arrows, _texts = parse(chain_svg(run_ok(qcow2_info, {"path": top})))
    assert [lines[0] for _rect, lines in boxes] == ["top.qcow2", "base.qcow2"]
    assert all(lines[1].startswith("qcow2, 8 MiB virtual, ") for _rect, lines in boxes)
    assert len(arrows) == 1


def test_full_path():
    _root, boxes, _arrows, _texts = parse(chain_svg([BASE], full_path=True))
    assert boxes[0][1][0] == "/var/lib/libvirt/images/base.qcow2"


def test_linked_clones_join_the_image_they_share():
    clone = {"filename": "/var/lib/libvirt/images/vm2.qcow2", "backing_filename_format": "qcow2"}
    other = [{"filename": "/other/top.qcow2"}, {"filename": "/other/base.qcow2"}]
    _root, boxes, arrows, _texts = parse(chain_svg([TOP, BASE], also=[[clone, BASE], other]))
    names = [lines[0] for _rect, lines in boxes]
    assert sorted(names) == ["base.qcow2", "base.qcow2", "top.qcow2", "vm1.qcow2", "vm2.qcow2"]
    assert names.count("base.qcow2") == 2  # the shared base once, the other chain's base once
    box = {lines[0] + rect.get("x"): rect for rect, lines in boxes}
    vm1, vm2 = (next(r for k, r in box.items() if k.startswith(n)) for n in ("vm1.qcow2", "vm2.qcow2"))
    assert vm1.get("y") == vm2.get("y") and float(vm2.get("x")) > float(vm1.get("x"))
    assert len(arrows) == 3  # vm1 -> base, vm2 -> base, top -> other base
    shared_base = next(r for k, r in box.items() if k.startswith("base.qcow2") and r.get("x") == vm1.get("x"))
    vm2_arrow = next(a for a in arrows if float(a.get("x1")) > float(vm1.get("x")) + float(vm1.get("width"))
                     and float(a.get("y2")) == float(shared_base.get("y")))
    assert float(vm2_arrow.get("x2")) < float(vm2.get("x"))  # it leads back to the first column


def test_the_filter_plugin_serves_it():
    from ansible_collections.backingchain.qcow2.plugins.filter.chain_svg import FilterModule
    assert FilterModule().filters() == {"chain_svg": chain_svg}

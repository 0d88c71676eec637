# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import re

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.backingchain.qcow2.plugins.filter import chain_diagram as plugin
from ansible_collections.backingchain.qcow2.plugins.filter.chain_diagram import FilterModule, chain_diagram, escape_label, human_size
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_info
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, make_image, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_ok

NODE = re.compile(r'^  (n\d+)\["(.*)"\]$')
EDGE = re.compile(r'^  (n\d+) (-->|-\.->)\|"(.*)"\| (n\d+)$')

TOP = {
    "filename": "/var/lib/libvirt/images/vm1.qcow2",
    "format": "qcow2",
    "virtual_size": 20 << 30,
    "actual_size": 200704,
    "backing_filename": "base.qcow2",
    "full_backing_filename": "/var/lib/libvirt/images/base.qcow2",
    "backing_filename_format": "qcow2",
}
BASE = {
    "filename": "/var/lib/libvirt/images/base.qcow2",
    "format": "qcow2",
    "virtual_size": 20 << 30,
    "actual_size": 1503238554,
}


def parse(text):
    """(header lines, {node id: label}, [(from, arrow, label, to)], other lines) of a diagram."""
    lines = text.split("\n")
    header = lines[:lines.index(next(line for line in lines if line.startswith("flowchart "))) + 1]
    nodes, edges, other = {}, [], []
    for line in lines[len(header):]:
        node, edge = NODE.match(line), EDGE.match(line)
        if node:
            nodes[node.group(1)] = node.group(2)
        elif edge:
            edges.append(edge.groups())
        else:
            other.append(line)
    return header, nodes, edges, other


def test_two_images_one_edge_labelled_with_the_backing_format():
    header, nodes, edges, other = parse(chain_diagram([TOP, BASE]))
    assert header == ["flowchart TD"]
    assert nodes == {
        "n0": "vm1.qcow2<br/>qcow2, 20 GiB virtual, 196 KiB on disk",
        "n1": "base.qcow2<br/>qcow2, 20 GiB virtual, 1.4 GiB on disk",
    }
    assert edges == [("n0", "-->", "qcow2", "n1")]
    assert other == []


def test_a_qcow2_info_result_uses_its_chain():
    result = {"changed": False, "image": TOP, "chain": [TOP, BASE], "chain_depth": 2}
    assert chain_diagram(result) == chain_diagram([TOP, BASE])


def test_one_image_without_backing_file_is_one_node():
    _header, nodes, edges, other = parse(chain_diagram(BASE))
    assert list(nodes) == ["n0"] and edges == [] and other == []


def test_backing_file_outside_the_chain_is_a_dashed_node():
    # what qcow2_info returns with backing_chain=false: image only, no chain
    _header, nodes, edges, other = parse(chain_diagram({"changed": False, "image": TOP}))
    assert nodes["n1"] == "base.qcow2<br/>not read"
    assert edges == [("n0", "-.->", "qcow2", "n1")]
    assert other == ["  style n1 stroke-dasharray: 5 5"]


def test_missing_values_are_said_not_guessed():
    image = {"filename": "a.qcow2", "backing_filename": "b.raw"}
    _header, nodes, edges, _other = parse(chain_diagram([image]))
    assert nodes["n0"] == "a.qcow2<br/>format unknown"
    assert edges == [("n0", "-.->", "format not recorded", "n1")]


def test_a_raw_backing_file_labels_the_edge_raw():
    top = dict(TOP, backing_filename="disk.raw", full_backing_filename="/v/disk.raw", backing_filename_format="raw")
    raw = {"filename": "/v/disk.raw", "format": "raw", "virtual_size": 8 * MIB, "actual_size": 0}
    _header, nodes, edges, _other = parse(chain_diagram([top, raw]))
    assert nodes["n1"] == "disk.raw<br/>raw, 8 MiB virtual, 0 bytes on disk"
    assert edges == [("n0", "-->", "raw", "n1")]


def test_long_chain_edges_follow_the_chain_top_first():
    chain = [dict(BASE, filename="/v/l%d.qcow2" % i, backing_filename_format="qcow2") for i in range(5)]
    del chain[-1]["backing_filename_format"]
    _header, nodes, edges, _other = parse(chain_diagram(chain))
    assert [nodes[k].split("<br/>")[0] for k in sorted(nodes)] == ["l0.qcow2", "l1.qcow2", "l2.qcow2", "l3.qcow2", "l4.qcow2"]
    assert [(a, b) for a, _arrow, _label, b in edges] == [("n0", "n1"), ("n1", "n2"), ("n2", "n3"), ("n3", "n4")]


@pytest.mark.parametrize("name, expected", [
    ('say "hi".qcow2', "say #quot;hi#quot;.qcow2"),
    ("#1.qcow2", "#35;1.qcow2"),
    ("a<b>c.qcow2", "a#lt;b#gt;c.qcow2"),
    ("```.qcow2", "#96;#96;#96;.qcow2"),
    ("x&y.qcow2", "x#amp;y.qcow2"),
    ("line\nbreak\t.qcow2", "line break .qcow2"),
    ("a|b(c)[d]{e}.qcow2", "a|b(c)[d]{e}.qcow2"),
    ("#quot;", "#35;quot;"),
])
def test_file_names_cannot_end_the_label(name, expected):
    assert escape_label(name) == expected
    _header, nodes, _edges, _other = parse(chain_diagram([{"filename": "/d/" + name}]))
    assert nodes["n0"].split("<br/>")[0] == expected
    assert '"' not in nodes["n0"] and "`" not in nodes["n0"]


def test_a_hostile_name_stays_on_its_node_line():
    name = '/d/x"]\n  n9["pwned'
    text = chain_diagram([{"filename": name, "format": "qcow2"}])
    _header, nodes, edges, other = parse(text)
    assert list(nodes) == ["n0"] and edges == [] and other == []


def test_full_path_and_direction():
    header, nodes, _edges, _other = parse(chain_diagram([TOP, BASE], direction="lr", full_path=True))
    assert header == ["flowchart LR"]
    assert nodes["n0"].startswith("/var/lib/libvirt/images/vm1.qcow2<br/>")


def test_title_is_yaml_front_matter():
    text = chain_diagram([BASE], title='web1: "vda" #1')
    header = text.split("\n")[:4]
    assert header[0] == "---" and header[2] == "---" and header[3] == "flowchart TD"
    assert yaml.safe_load(header[1]) == {"title": 'web1: "vda" #1'}


def test_empty_chain():
    assert chain_diagram([]) == 'flowchart TD\n  empty["no image"]'


@pytest.mark.parametrize("data, message", [
    ("vm1.qcow2", "got str"),
    ({"changed": False}, "dictionary with keys changed"),
    ([{"format": "qcow2"}], "image 0 of the chain"),
    ([TOP, "base.qcow2"], "image 1 of the chain"),
    ({"chain": "x"}, "'chain' must be a list"),
])
def test_bad_input_is_a_filter_error(data, message):
    with pytest.raises(AnsibleFilterError, match=re.escape(message)):
        chain_diagram(data)


def test_bad_direction_is_a_filter_error():
    with pytest.raises(AnsibleFilterError, match="direction must be one of"):
        chain_diagram([BASE], direction="down")


@pytest.mark.parametrize("size, text", [
    (0, "0 bytes"), (512, "512 bytes"), (1023, "1023 bytes"), (1024, "1 KiB"), (1536, "1.5 KiB"),
    (200704, "196 KiB"), (64 * MIB, "64 MiB"), (int(99.97 * MIB), "100 MiB"), (int(99.94 * MIB), "99.9 MiB"), (5 << 30, "5 GiB"), (1 << 60, "1 EiB"),
])
def test_human_size(size, text):
    assert human_size(size) == text


def test_sizes_that_are_not_numbers_are_left_out():
    image = dict(BASE, virtual_size="big", actual_size=True)
    _header, nodes, _edges, _other = parse(chain_diagram([image]))
    assert nodes["n0"] == "base.qcow2<br/>qcow2"


def test_a_chain_read_by_qcow2_info(tmp_path):
    make_image(tmp_path / "base.qcow2", size=8 * MIB)
    make_image(tmp_path / "mid.qcow2", backing="base.qcow2")
    top = make_image(tmp_path / "top.qcow2", backing=str(tmp_path / "mid.qcow2"))
    write(top, 0, b"\x5a" * MIB)
    result = run_ok(qcow2_info, {"path": top})
    _header, nodes, edges, other = parse(chain_diagram(result))
    assert [label.split("<br/>")[0] for _node, label in sorted(nodes.items())] == ["top.qcow2", "mid.qcow2", "base.qcow2"]
    assert all(", 8 MiB virtual, " in label for label in nodes.values())
    assert edges == [("n0", "-->", "qcow2", "n1"), ("n1", "-->", "qcow2", "n2")]
    assert other == []


def test_registered_under_its_name():
    assert FilterModule().filters() == {"chain_diagram": chain_diagram}


def test_documentation_is_yaml_with_the_filter_name():
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc["name"] == "chain_diagram"
    assert set(doc["options"]) == {"_input", "direction", "full_path", "title"}
    assert doc["options"]["direction"]["choices"] == list(plugin.DIRECTIONS)
    assert yaml.safe_load(plugin.RETURN)["_value"]["type"] == "str"
    assert isinstance(yaml.safe_load(plugin.EXAMPLES), list)

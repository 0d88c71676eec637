# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How often one module run opens a chain: the plan reads it once, the write opens it once, the final read once.

The engine's plan is the single source of truth of a run (what changes, the chain after it, whether the locks and
the free space allow it): nothing reads the chain again to predict or to check it. A commit that writes walks the
layers' data once, under its locks (its plan leaves the bytes and the free space to it); so does a rebase that copies.
"""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import chain as engine_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import commit as engine_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import rebase as engine_rebase
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_commit, qcow2_rebase, qcow2_snapshot
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import three_layer_chain
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_ok


@pytest.fixture
def opens(monkeypatch):
    """Every chain the engine opens during the test, as (top image, images in the chain, writable)."""
    seen = []
    original = engine_chain.Chain.__init__

    def counting(self, images):
        original(self, images)
        seen.append((images[0].path, len(images), images[0].writable))

    monkeypatch.setattr(engine_chain.Chain, "__init__", counting)
    return seen


@pytest.mark.parametrize("module, args", [
    (qcow2_commit, {}),
    (qcow2_commit, {"top_is_mid": True}),
    (qcow2_rebase, {"backing_file": "base.qcow2"}),
    (qcow2_snapshot, {"type": "external", "overlay": "overlay.qcow2"}),
], ids=["commit", "commit-middle", "rebase", "external-snapshot"])
def test_a_run_opens_the_chain_to_plan_to_write_and_to_read_the_result(tmp_path, opens, module, args):
    _base, mid, top = three_layer_chain(tmp_path)
    args = dict(args, path=top)
    if args.pop("top_is_mid", False):
        args["top"] = mid
    if "overlay" in args:
        args["overlay"] = str(tmp_path / args["overlay"])
    del opens[:]
    assert run_ok(module, args, diff=True)["changed"] is True
    print("%s %s: %d chain opens: %s" % (module.__name__, sorted(args), len(opens), opens))
    assert len(opens) == 3, opens


@pytest.mark.parametrize("module, args", [
    (qcow2_commit, {}),
    (qcow2_rebase, {"backing_file": "base.qcow2"}),
    (qcow2_snapshot, {"type": "external", "overlay": "overlay.qcow2"}),
], ids=["commit", "rebase", "external-snapshot"])
def test_check_mode_opens_the_chain_once(tmp_path, opens, module, args):
    _base, _mid, top = three_layer_chain(tmp_path)
    args = dict(args, path=top)
    if "overlay" in args:
        args["overlay"] = str(tmp_path / args["overlay"])
    del opens[:]
    assert run_ok(module, args, check_mode=True, diff=True)["changed"] is True
    print("%s %s check mode: %d chain opens: %s" % (module.__name__, sorted(args), len(opens), opens))
    assert len(opens) == 1, opens


def _walked_layers(monkeypatch, engine_module):
    """The top image of every layers' walk (segments.layer_runs) engine_module makes from now on."""
    walks = []
    original = engine_module.layer_runs

    def counting(top_img, stop, offset, length):
        walks.append(top_img.path)
        return original(top_img, stop, offset, length)

    monkeypatch.setattr(engine_module, "layer_runs", counting)
    return walks


@pytest.mark.parametrize("check_mode", [False, True], ids=["real", "check"])
def test_a_commit_walks_the_layers_data_once(tmp_path, monkeypatch, check_mode):
    _base, _mid, top = three_layer_chain(tmp_path)
    walks = _walked_layers(monkeypatch, engine_commit)
    result = run_ok(qcow2_commit, {"path": top}, check_mode=check_mode)
    assert result["changed"] is True and result["bytes_copied"] > 0
    assert walks == [top], walks


def test_a_rebase_that_copies_walks_the_layers_data_once(tmp_path, monkeypatch):
    """The real run walks the layers exactly as much as check mode's plan does: once, in the rebase itself."""
    walks = _walked_layers(monkeypatch, engine_rebase)
    counts = {}
    for check_mode in (True, False):
        directory = tmp_path / ("check" if check_mode else "real")
        directory.mkdir()
        _base, _mid, top = three_layer_chain(directory)
        del walks[:]
        result = run_ok(qcow2_rebase, {"path": top, "backing_file": "base.qcow2"}, check_mode=check_mode)
        assert result["changed"] is True and result["bytes_copied"] > 0
        counts[check_mode] = len(walks)
    assert counts[True] > 0 and counts[False] == counts[True], counts

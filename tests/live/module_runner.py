# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Running the collection's modules as Ansible runs them: the ``ansible`` command (AnsiballZ, the
module_utils it ships, the managed node's Python) against localhost, with a test callback that
prints each result as JSON. Check-mode runs, which only read, may go through the in-process
harness of the unit tests instead: an ``ansible`` process costs seconds."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules import harness

CALLBACKS = Path(__file__).resolve().parent / "ansible_plugins" / "callback"
MARK = "MODULE_RESULT "


class ModuleRun:
    """A module started in the background; result() waits for it."""

    def __init__(self, module: str, args: dict, check: bool = False, diff: bool = True):
        self.argv = [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
                     "-e", "ansible_python_interpreter=%s" % sys.executable,
                     "-m", "backingchain.qcow2.%s" % module, "-a", json.dumps(args)]
        self.argv += ["--check"] if check else []
        self.argv += ["--diff"] if diff else []
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ["BCQ_LIVE_COLLECTIONS_PATH"],
                   ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                   ANSIBLE_STDOUT_CALLBACK="module_result", ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def stop(self) -> None:
        """Kill the run if it still goes (a test failed before waiting for it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def result(self, timeout: float = 300) -> dict:
        """The module's result as Ansible received it; failures have failed=True and msg."""
        out, err = self.proc.communicate(timeout=timeout)
        records = [json.loads(line[len(MARK):]) for line in out.splitlines() if line.startswith(MARK)]
        if len(records) != 1:
            raise AssertionError("expected one module result from %s\nstdout:\n%s\nstderr:\n%s" % (self.argv, out, err))
        result = records[0]["result"]
        result["failed"] = records[0]["status"] != "ok"
        return result


def run_module(module: str, args: dict, check: bool = False, diff: bool = True, in_process: bool = False) -> dict:
    if in_process:
        code = importlib.import_module("ansible_collections.backingchain.qcow2.plugins.modules.%s" % module)
        result = harness.run_module(code, args, check_mode=check, diff=diff)
        result.setdefault("failed", False)
        return result
    return ModuleRun(module, args, check=check, diff=diff).result()


def run_ok(module: str, args: dict, **kwargs) -> dict:
    result = run_module(module, args, **kwargs)
    assert not result["failed"], result.get("msg")
    return result


def run_failed(module: str, args: dict, **kwargs) -> dict:
    result = run_module(module, args, **kwargs)
    assert result["failed"], result
    assert "Traceback" not in result["msg"] and "exception" not in result.get("module_stderr", "")
    return result


def converge(module: str, args: dict, state) -> tuple[dict, dict, dict, dict]:
    """Check mode, real run, check mode again, real run again, as the integration targets do; the
    real runs through ``ansible``, the check runs in-process.

    ``state()`` returns what the task may change (domain chains, definitions, files). Asserts that the
    first check run changes nothing and predicts the change and the diff the real run reports, and that
    the second pair reports no change and leaves ``state()`` alone. Returns the four results.
    """
    before = state()
    check1 = run_ok(module, args, check=True, in_process=True)
    assert state() == before, "check mode changed something"
    real1 = run_ok(module, args)
    assert check1["changed"] is True and real1["changed"] is True, (check1, real1)
    assert check1["diff"] == real1["diff"], (check1["diff"], real1["diff"])
    after = state()
    assert after != before, "the real run changed nothing"
    check2 = run_ok(module, args, check=True, in_process=True)
    real2 = run_ok(module, args)
    assert check2["changed"] is False and real2["changed"] is False, (check2, real2)
    assert state() == after, "the second run changed something"
    return check1, real1, check2, real2

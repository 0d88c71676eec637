# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The guarded libvirt import that modules turn into missing_required_lib("libvirt-python")."""

from __future__ import annotations

import subprocess
import sys

from ansible_collections.backingchain.qcow2.plugins.module_utils._live import libvirt_dep

WITHOUT_LIBVIRT = """
import sys
sys.modules["libvirt"] = None  # makes "import libvirt" raise ImportError, as on a host without it
from ansible_collections.backingchain.qcow2.plugins.module_utils._live import libvirt_dep
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import connect
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
assert libvirt_dep.HAS_LIBVIRT is False
assert "Error: import of libvirt halted" in libvirt_dep.LIBVIRT_IMPORT_ERROR
try:
    connect("qemu:///system")
except LiveError as err:
    print(err)
"""


def test_libvirt_is_available_in_the_test_environment():
    assert libvirt_dep.HAS_LIBVIRT is True and libvirt_dep.LIBVIRT_IMPORT_ERROR is None


def test_without_libvirt_the_import_guard_reports_it():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_LIBVIRT], capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": ":".join(p for p in sys.path if p)})
    assert proc.returncode == 0, proc.stderr
    assert "libvirt-python is required on the target host" in proc.stdout

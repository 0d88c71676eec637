# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Domain XML as libvirt 9.0 writes it (fixtures/), with @DIR@ standing for a test's directory."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def domain_xml(name: str, directory: Path) -> str:
    """The fixture ``name`` with its images in ``directory``."""
    return (FIXTURES / name).read_text().replace("@DIR@", str(directory))


def make_files(directory: Path, *names: str) -> list[str]:
    """Empty files standing for images (identity is what the XML code compares); their paths."""
    paths = []
    for name in names:
        (directory / name).write_bytes(b"")
        paths.append(str(directory / name))
    return paths

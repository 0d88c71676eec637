# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A 3-deep chain base <- mid <- top with distinct data per layer, linked by relative names."""

from __future__ import annotations

import os
from dataclasses import dataclass

from live_helpers import MiB, create_image, write_offline

BASE_DATA = (0x11, 0, MiB)
MID_DATA = (0x22, 1 * MiB, MiB)
TOP_DATA = (0x33, 2 * MiB, MiB)


@dataclass
class Chain:
    base: str
    mid: str
    top: str


def three_deep_chain(directory, mid_extra: int = 0) -> Chain:
    """Links are written relative ("base.qcow2"), as qemu-img and the engine do by default.
    ``mid_extra`` bytes of 0x55 data after 8 MiB make jobs on mid slow enough to throttle."""
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        create_image("base.qcow2")
        create_image("mid.qcow2", backing="base.qcow2")
        create_image("top.qcow2", backing="mid.qcow2")
    finally:
        os.chdir(cwd)
    chain = Chain(*(str(directory / name) for name in ("base.qcow2", "mid.qcow2", "top.qcow2")))
    write_offline(chain.base, *BASE_DATA)
    write_offline(chain.mid, *MID_DATA)
    write_offline(chain.top, *TOP_DATA)
    if mid_extra:
        write_offline(chain.mid, 0x55, 8 * MiB, mid_extra)
    return chain

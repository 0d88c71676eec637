# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run one engine operation as its own process, so the benchmark times it like a qemu-img command."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins", "module_utils"))

from _qcow2 import api  # noqa: E402  pylint: disable=wrong-import-position


def main(argv):
    op = argv[0]
    if op == "commit":
        api.commit(argv[1], base=argv[2] if len(argv) > 2 else None)
    elif op == "convert":
        api.convert(argv[1], argv[2], compress="-c" in argv[3:])
    elif op == "rebase":
        api.rebase(argv[1], argv[2], argv[3] if len(argv) > 3 else "qcow2")
    elif op == "info":
        json.dump(api.image_info(argv[1], backing_chain=True), sys.stdout)
    elif op == "read-all":
        api.read_view(argv[1])
    elif op == "incremental":  # source, bitmap, new layer, its backing file
        dirty = api.dirty_ranges(argv[1], argv[2])
        api.copy_ranges(argv[1], argv[3], dirty.ranges, backing_file=argv[4])
    elif op == "check":
        api.check(argv[1])
    elif op == "snapshot":
        api.create_snapshot(argv[1], argv[2])
    else:
        raise SystemExit("unknown op %s" % op)


if __name__ == "__main__":
    main(sys.argv[1:])

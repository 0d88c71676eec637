# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:

    # Descriptions of the attributes every module of the collection declares.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Runs in check mode, writes nothing, and reports the C(changed) that a real run would report.
  diff_mode:
    description: In diff mode, returns the image and its backing chain before and after (or, in check mode, as it would be after).
  idempotent:
    description:
      - A second run with the same arguments reports no change and touches no file.
      - This assumes nothing else changed the images in between.
"""

    # With DOCUMENTATION, for modules that only read.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This module only reads.
  diff_mode:
    support: N/A
    details:
      - This module only reads.
  idempotent:
    support: full
    details:
      - This module only reads.
"""

    ACTIONGROUP_QCOW2 = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/backingchain.qcow2.qcow2) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - backingchain.qcow2.qcow2
"""

    FILES = r"""
options: {}
attributes:
  safe_file_operations:
    description: Builds new images under a temporary name in the same directory and renames them into place with Ansible's file functions.
"""

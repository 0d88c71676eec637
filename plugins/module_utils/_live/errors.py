# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one exception type of the live layer."""

from __future__ import annotations


class LiveError(Exception):
    """A live operation could not be done; ``str(err)`` is a message meant for the user.

    ``details`` carries machine-readable context (domain, disk, libvirt error code) that a
    module may add to its failure result.
    """

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

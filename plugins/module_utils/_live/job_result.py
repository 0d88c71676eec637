# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The result dict every live block operation returns."""

from __future__ import annotations

import time

OUTCOME_COMPLETED = "completed"  # a commit below the active layer or a pull finished; chain verified
OUTCOME_PIVOTED = "pivoted"  # an active commit finished and the disk now runs on the base; verified
OUTCOME_ABORTED = "aborted"  # an active commit reached READY and was cancelled on request (pivot=False)
OUTCOME_TIMEOUT = "timeout"  # not done in time: the job was aborted, the domain keeps its original chain
OUTCOME_FAILED = "failed"  # the job ended without the expected chain (qemu error, cancelled by someone else)
OUTCOME_UNCHANGED = "unchanged"  # nothing to do: the chain is already as asked

SUCCESS_OUTCOMES = (OUTCOME_COMPLETED, OUTCOME_PIVOTED, OUTCOME_ABORTED, OUTCOME_UNCHANGED)
CHANGED_OUTCOMES = (OUTCOME_COMPLETED, OUTCOME_PIVOTED, OUTCOME_ABORTED)


def job_result(job: str, outcome: str, started: float, message: str, cur: int = 0, end: int = 0,
               aborted: bool = False, chain_before: list | None = None, chain_after: list | None = None,
               **extra: object) -> dict:
    """Build the result: job name, outcome (one of OUTCOME_*), changed, failed, aborted
    (we cancelled the job), cur/end bytes as libvirt last reported them, duration in
    seconds since ``started`` (time.monotonic()), a human message and the chain before/after."""
    result = {
        "job": job,
        "outcome": outcome,
        "changed": outcome in CHANGED_OUTCOMES,
        "failed": outcome not in SUCCESS_OUTCOMES,
        "aborted": aborted,
        "cur": cur,
        "end": end,
        "duration": round(time.monotonic() - started, 3),
        "message": message,
        "chain_before": list(chain_before or []),
        "chain_after": list(chain_after or []),
    }
    result.update(extra)
    return result

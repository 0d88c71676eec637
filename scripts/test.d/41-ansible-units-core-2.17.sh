#!/usr/bin/env bash
# Stage 40-ansible-units under ansible-core 2.17 (.venvs/ansible-core-2.17), on the controller Python only,
# without the engine's tests (they import nothing from ansible-core).
# test.sh: about 70 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
use_ansible_core 2.17
UNITS_LEAN=1 UNITS_PYTHONS="$(controller_python_version)" exec bash "$REPO/scripts/test.d/40-ansible-units.sh"

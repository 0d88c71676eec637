#!/usr/bin/env bash
# Stage 30-sanity under ansible-core 2.18 (.venvs/ansible-core-2.18), on the controller Python only.
# test.sh: about 30 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
use_ansible_core 2.18
SANITY_CONTROLLER_ONLY=1 exec bash "$REPO/scripts/test.d/30-sanity.sh"

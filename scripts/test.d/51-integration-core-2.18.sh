#!/usr/bin/env bash
# Stage 50-integration under ansible-core 2.18 (.venvs/ansible-core-2.18): every target, on localhost.
# test.sh: about 170 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
use_ansible_core 2.18
exec bash "$REPO/scripts/test.d/50-integration.sh"

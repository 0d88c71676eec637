#!/usr/bin/env bash
# ansible-lint with the production profile (.ansible-lint) over playbooks,
# roles, integration targets and molecule scenarios; offline.
# test.sh: about 45 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

use_checkout_collection
exec ansible-lint

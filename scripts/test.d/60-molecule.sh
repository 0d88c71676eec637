#!/usr/bin/env bash
# molecule scenarios under extensions/molecule/, against localhost (the
# built-in default driver; no containers here). Each scenario runs its
# test_sequence, including the idempotence check (second converge: changed=0).
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

has_files extensions/molecule molecule.yml || skip "no molecule scenarios under extensions/molecule"

use_checkout_collection
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
exec molecule test --all

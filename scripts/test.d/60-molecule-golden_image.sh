#!/usr/bin/env bash
# molecule test of the golden_image scenario (extensions/molecule/golden_image), against
# localhost: its test_sequence, including the idempotence check. One stage per
# scenario, so that test.sh runs them beside other stages.
# test.sh: about 200 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
molecule_scenario golden_image

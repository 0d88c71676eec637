#!/usr/bin/env bash
# Changelog fragments and plugin documentation: antsibull-changelog lint
# (fragment syntax and sections) and antsibull-docs lint-collection-docs
# (DOCUMENTATION/RETURN markup, option references, extra docs), and the reference pages in
# docs/reference/ generated from that documentation being up to date.
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

use_checkout_collection
rc=0
echo "+ antsibull-changelog lint"
antsibull-changelog lint || rc=1
echo "+ antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml"
antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml || rc=1
echo "+ antsibull-docs lint-collection-docs --plugin-docs ."
antsibull-docs lint-collection-docs --plugin-docs . || rc=1
echo "+ scripts/gen-docs.sh --check"
"$REPO/scripts/gen-docs.sh" --check || rc=1
exit $rc

#!/usr/bin/env bash
# Changelog fragments and plugin documentation: antsibull-changelog lint
# (fragment syntax and sections) and antsibull-docs lint-collection-docs
# (DOCUMENTATION/RETURN markup, option references, extra docs), and the generated files being
# up to date: CHANGELOG.rst and CHANGELOG.md (from changelogs/changelog.yaml), the reference pages
# in docs/reference/ (from the plugin documentation).
# test.sh: about 20 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

use_checkout_collection
rc=0
echo "+ antsibull-changelog lint"
antsibull-changelog lint || rc=1
echo "+ antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml"
antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml || rc=1
for format in rst md; do
    echo "+ antsibull-changelog generate --output-format $format: CHANGELOG.$format is up to date"
    generated="$(mktemp)"
    if ! antsibull-changelog generate --output "$generated" --output-format "$format" ||
        ! diff -u "CHANGELOG.$format" "$generated"; then
        echo "CHANGELOG.$format is out of date: run antsibull-changelog generate"
        rc=1
    fi
    rm -f "$generated"
done
echo "+ antsibull-docs lint-collection-docs --plugin-docs ."
antsibull-docs lint-collection-docs --plugin-docs . || rc=1
echo "+ scripts/gen-docs.sh --check"
"$REPO/scripts/gen-docs.sh" --check || rc=1
exit $rc

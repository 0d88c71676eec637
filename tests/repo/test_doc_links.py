"""Links between the repository's own documents lead to files that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
RST_LINK = re.compile(r"`[^`<]*<([^>`]+)>`__?")


def _documents():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md", "*.rst"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return sorted(path for path in listed if not path.startswith("docs/reference/") and (REPO / path).is_file())


@pytest.mark.parametrize("document", _documents())
def test_relative_links_resolve(document):
    text = (REPO / document).read_text(encoding="utf-8")
    targets = MARKDOWN_LINK.findall(text) if document.endswith(".md") else RST_LINK.findall(text)
    broken = []
    for target in targets:
        path = target.split("#", 1)[0]
        if not path or re.match(r"^[a-z]+:", path):
            continue  # an anchor in the same page, or a URL
        if not (REPO / document).parent.joinpath(path).exists():
            broken.append(target)
    assert broken == []

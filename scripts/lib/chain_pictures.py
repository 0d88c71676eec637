"""Draw the chain pictures of the guides (docs/docsite/rst/*.rst) with the collection's chain_svg.

A picture is described in an RST comment that starts with '.. chain picture' and holds YAML: one picture, or a
list of pictures drawn side by side. A picture is the arguments of the chain_svg filter, its input under `chain`.
The '.. raw:: html' block right after the comment holds the SVG, written here; docs.ansible.com, the docs site
built by antsibull-docs and any RST viewer that renders raw HTML show it as it is, with nothing to fetch.

A FILE.yml holds one picture's description alone; its picture is written to FILE.svg (for Markdown pages,
which show SVG files as images).

    python scripts/lib/chain_pictures.py FILE...           # rewrite the raw blocks / the .svg files
    python scripts/lib/chain_pictures.py --check FILE...   # exit 1 when one is out of date
    python scripts/lib/chain_pictures.py --module-pages RST_DIR PICTURES.yml
        # put each module's pictures (PICTURES.yml: module name -> list of pictures) under the synopsis of
        # RST_DIR/<module>_module.rst, as antsibull-docs wrote it; a module without pictures is an error
Run with the collection importable as ansible_collections.backingchain.qcow2 (first entry of
ANSIBLE_COLLECTIONS_PATH, as scripts/gen-docs.sh sets it).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap

import yaml

sys.path.insert(0, os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(":")[0])
from ansible_collections.backingchain.qcow2.plugins.plugin_utils.chain_svg import chain_svg  # noqa: E402

COMMENT = re.compile(r"^\.\. chain picture\b.*\n((?:(?:   .*)?\n)+)", re.MULTILINE)
RAW = re.compile(r"\A\n*\.\. raw:: html\n\n(?:   .*\n|\n(?=   ))*")


def picture(spec: dict) -> str:
    arguments = dict(spec)
    return chain_svg(arguments.pop("chain"), **arguments)


def draw(spec) -> str:
    svgs = [picture(one) for one in (spec if isinstance(spec, list) else [spec])]
    return ('<div class="chain-pictures" style="display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start">'
            + "".join(svgs) + "</div>")


def redraw(text: str) -> str:
    out, position = [], 0
    for match in COMMENT.finditer(text):
        spec = yaml.safe_load(textwrap.dedent(match.group(1)))
        out.append(text[position:match.end()].rstrip("\n") + "\n")
        old = RAW.match(text[match.end():])
        out.append("\n.. raw:: html\n\n   %s\n\n" % draw(spec))
        position = match.end() + (old.end() if old else 0)
        while position < len(text) and text[position] == "\n":
            position += 1
    out.append(text[position:])
    return "".join(out)


# antsibull-docs writes this comment after a module page's synopsis.
MODULE_PAGE_MARK = "\n.. Aliases\n"


def module_pages(rst_dir: str, pictures_file: str) -> int:
    with open(pictures_file, encoding="utf-8") as handle:
        pictures = yaml.safe_load(handle)
    pages = sorted(name for name in os.listdir(rst_dir) if name.endswith("_module.rst"))
    missing = [page for page in pages if page[:-len("_module.rst")] not in pictures]
    if missing:
        print("no chain pictures in %s for %s" % (pictures_file, ", ".join(missing)))
        return 1
    for page in pages:
        path = os.path.join(rst_dir, page)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if MODULE_PAGE_MARK not in text:
            print("%s: no '%s' to put the pictures before" % (path, MODULE_PAGE_MARK.strip()))
            return 1
        section = ("\nWhat it does to a chain\n-----------------------\n\n.. raw:: html\n\n   %s\n\n"
                   % draw(pictures[page[:-len("_module.rst")]]))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text.replace(MODULE_PAGE_MARK, section + MODULE_PAGE_MARK, 1))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--module-pages"]:
        return module_pages(*argv[1:])
    check = argv[:1] == ["--check"]
    stale = []
    for source in argv[1:] if check else argv:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
        if source.endswith(".yml"):
            path, new = source[:-len(".yml")] + ".svg", picture(yaml.safe_load(text)) + "\n"
            text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
        else:
            path, new = source, redraw(text)
        if new != text:
            stale.append(path)
            if not check:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(new)
    verb = "out of date" if check else "redrawn"
    for path in stale:
        print("chain pictures %s: %s" % (verb, path))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

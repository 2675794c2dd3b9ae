"""Checks a built documentation site: it loads nothing from another host and its formulas are marked for KaTeX.

    python docs/check_site.py site      # run by `make docs` after the build; exit status 1 names what is wrong

Every page's scripts, style sheets and images must come from the site itself (``src``/``href`` of ``<script>``,
``<link>``, ``<img>``), and so must every ``url(...)`` and ``@import`` of its CSS; the theory page must hold
formulas (``arithmatex`` elements) and the KaTeX copy they are typeset with.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import List

REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)")


class _Loads(HTMLParser):
    """The addresses a page loads: script sources, style sheets and icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: List[str] = []
        self.formulas = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.loads.append(values["src"])
        if tag == "link" and values.get("rel") not in ("canonical", "alternate") and values.get("href"):
            self.loads.append(values["href"])
        if tag == "img" and values.get("src"):
            self.loads.append(values["src"])
        if "arithmatex" in (values.get("class") or "").split():
            self.formulas += 1


def problems(site: Path) -> List[str]:
    found = []
    formulas = 0
    for page in sorted(site.rglob("*.html")):
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8"))
        found += [f"{page.relative_to(site)} loads {url}" for url in parser.loads if REMOTE.match(url)]
        formulas += parser.formulas if page.name == "theory.html" else 0
    for sheet in sorted(site.rglob("*.css")):
        for match in CSS_URL.finditer(sheet.read_text(encoding="utf-8", errors="replace")):
            url = match.group(1) or match.group(2)
            if REMOTE.match(url.strip()):
                found.append(f"{sheet.relative_to(site)} loads {url}")
    if formulas < 20:
        found.append(f"theory.html holds {formulas} formulas; arithmatex did not mark them")
    if not (site / "assets" / "katex" / "katex.min.js").is_file():
        found.append("assets/katex/katex.min.js is missing: the formulas would not be typeset")
    return found


def main() -> int:
    site = Path(sys.argv[1] if len(sys.argv) > 1 else "site")
    found = problems(site)
    for problem in found:
        print(f"check_site: {problem}", file=sys.stderr)
    print(f"check_site: {site}: {'ok' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

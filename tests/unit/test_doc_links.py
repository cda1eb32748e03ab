"""The README and the docs/ pages: every relative link reaches a file, every anchor a heading of
that file (as GitHub makes anchors), and the README's Documentation list names every page."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def unfenced(text: str) -> str:
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)


def prose(text: str) -> str:
    """The text without code blocks and inline code, where a `[x](y)` is no link."""
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", unfenced(text), flags=re.S)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as
    hyphens, and -1, -2, ... after a repeated one."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", unfenced(path.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.name}: {target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{path.name}: {target}: no such heading")
    return broken


def test_every_link_and_anchor_in_the_readme_and_the_docs_resolves():
    assert len(PAGES) > 1
    assert [line for page in [ROOT / "README.md", *PAGES] for line in broken_links(page)] == []


def test_the_readme_lists_every_page_and_every_page_links_back_to_it():
    readme = prose((ROOT / "README.md").read_text())
    documentation = readme[readme.index("## Documentation"):]
    assert [page.name for page in PAGES if f"](docs/{page.name})" not in documentation] == []
    assert [page.name for page in PAGES if "](../README.md)" not in page.read_text().split("\n## ")[0]] == []


def test_a_missing_file_or_heading_is_found_and_code_is_no_link(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Time limits (`[policy]`)\n\n## Time limits (`[policy]`)\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[a](other.md#time-limits-policy) [b](other.md#time-limits-policy-1) [c](#page)\n"
                    "[d](other.md#nowhere) [e](gone.md) [f](#nope) `[g](gone.md)`\n\n```\n[h](gone.md)\n```\n")
    assert broken_links(page) == ["page.md: other.md#nowhere: no such heading", "page.md: gone.md: no such file",
                                  "page.md: #nope: no such heading"]

"""Relative links in README.md and docs/*.md lead somewhere: a file that exists and, when the
link has an ``#anchor``, a heading of that file (GitHub's slug rules). No server, no network.
"""

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SKIPPED_SCHEMES = ("http://", "https://", "mailto:")


def markdown_files():
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path):
    """(line number, text) of the lines outside fenced code blocks."""
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, line


def github_slug(heading):
    """GitHub's anchor for a heading: link text kept, lower-case, punctuation except '-' and
    '_' dropped, spaces turned into '-'."""
    text = LINK.sub(lambda m: m.group(1), heading)
    text = INLINE_CODE.sub(lambda m: m.group(2), text).lower()
    kept = "".join(c for c in text if c.isalnum() or c in "-_ ")
    return kept.replace(" ", "-")


@cache
def anchors(path):
    """Every anchor the headings of ``path`` produce, with GitHub's -1, -2 … for repeats."""
    seen = {}
    result = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(result)


def relative_links():
    for path in markdown_files():
        for number, line in prose_lines(path):
            for match in LINK.finditer(INLINE_CODE.sub("", line)):
                target = match.group(2)
                if target.startswith(SKIPPED_SCHEMES):
                    continue
                yield path, number, target


LINKS = list(relative_links())


def link_id(link):
    path, number, target = link
    return f"{path.relative_to(ROOT)}:{number}->{target}"


def test_links_were_found():
    # Guards the parametrization below: a broken parser must not pass by finding nothing.
    files = {path for path, _, _ in LINKS}
    assert README in files
    assert len(LINKS) >= 20


@pytest.mark.parametrize("link", LINKS, ids=[link_id(link) for link in LINKS])
def test_relative_link_resolves(link):
    path, number, target = link
    file_part, _, anchor = target.partition("#")
    where = f"{path.relative_to(ROOT)}:{number}: link {target!r}"
    destination = (path.parent / file_part).resolve() if file_part else path
    assert destination.exists(), f"{where}: {destination} does not exist"
    if anchor:
        assert destination.suffix == ".md", f"{where}: an anchor into a file that is not Markdown"
        known = anchors(destination)
        assert anchor in known, (
            f"{where}: no heading with anchor #{anchor} in {destination.relative_to(ROOT)} "
            f"(anchors there: {', '.join(sorted(known))})"
        )


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_docs_page_has_title_and_links_back(page):
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines and re.match(r"# \S", lines[0]), f"{page.name} must start with a one-line H1"
    targets = {target for path, _, target in LINKS if path == page}
    assert "../README.md" in targets, f"{page.name} must link back to ../README.md"


def test_readme_lists_every_docs_page():
    targets = {target.partition("#")[0] for path, _, target in LINKS if path == README}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"docs/{p.name}" not in targets]
    assert not missing, f"README.md does not link to: {', '.join(missing)}"


def test_readme_is_short():
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines (at most {README_MAX_LINES})"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Staleness guarantee", "staleness-guarantee"),
        ("The `[mlflow]` section", "the-mlflow-section"),
        ("CLI: offline and online", "cli-offline-and-online"),
        ("Listing a run's artifacts", "listing-a-runs-artifacts"),
        ("Two places, one server", "two-places-one-server"),
        ("snake_case and -dashes-", "snake_case-and--dashes-"),
        ("See [Production](production.md)", "see-production"),
    ],
)
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug

"""docs/api.md's tables of what the code defines are written from the code
(scripts/api-tables): settings, errors and routes. Every measured figure in the README and
docs/ cites the bench/RESULTS.md section of its run, and every cited section exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from notsale.config import SETTING_NOTES, Settings
from notsale.errors import DEFAULT_DETAIL, STATUS, WHEN, ErrorCode

REPO = Path(__file__).resolve().parents[1]


def test_every_setting_and_error_code_has_its_note() -> None:
    assert list(SETTING_NOTES) == list(Settings.__struct_fields__)
    assert set(WHEN) == set(STATUS) == set(DEFAULT_DETAIL) == set(ErrorCode)


def test_the_api_docs_tables_are_the_codes() -> None:
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "api-tables"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


RESULTS = REPO / "bench" / "RESULTS.md"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A citation: a link to a section of bench/RESULTS.md, `[…](bench/RESULTS.md#anchor)`.
CITATION = re.compile(r"\]\(([^)#\s]*RESULTS\.md)#([^)\s]+)\)")
# What only a measurement says: a time in µs, or in ms or s with decimals (settings and
# timeouts are whole), a rate a second, a percentile, a ratio. A figure written otherwise
# must still cite its run; these are the ones a test can find.
MEASURED = re.compile(
    r"\d\s*µs|(?<!every )\d\.\d+\s*(?:ms|s)\b"
    r"|\d\s*(?:requests|checkouts|decisions|runs)?(?:/s\b| a second)"
    r"|\bp(?:50|99)\b|ratio to hello|of hello|[\u00d7x]\s?\d\.\d"  # x or the times sign
)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def paragraphs(text: str) -> list[str]:
    """A document's paragraphs (a table or a list is one), code blocks left out."""
    return re.split(r"\n\s*\n", re.sub(r"```.*?```", "", text, flags=re.S))


def test_every_cited_results_section_exists() -> None:
    headings = re.findall(r"^#+ (.+)$", RESULTS.read_text(), flags=re.M)
    anchors = {anchor(h) for h in headings}
    cited = 0
    for doc in DOCS:
        for path, section in CITATION.findall(doc.read_text()):
            assert (doc.parent / path).resolve() == RESULTS, f"{doc.name}: {path}"
            assert section in anchors, f"{doc.name} cites a section RESULTS.md lacks: {section}"
            cited += 1
    assert cited >= 10


def test_every_measured_figure_cites_its_run() -> None:
    """A paragraph (a table, a list) with a measured figure links its RESULTS.md section, or
    follows one that does (a table's lead-in)."""
    uncited = []
    for doc in DOCS:
        previous = ""
        for paragraph in paragraphs(doc.read_text()):
            if MEASURED.search(paragraph) and not CITATION.search(previous + paragraph):
                uncited.append(f"{doc.name}: {paragraph[:160]!r}")
            previous = paragraph
    assert uncited == []

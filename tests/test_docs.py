"""docs/api.md's tables of what the code defines are written from the code
(scripts/api-tables): settings, errors and routes."""

from __future__ import annotations

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

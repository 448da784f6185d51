"""The README, the changelog and docs/ are valid reStructuredText: every heading, table,
link target and code block parses without a warning (a merge once left a stray
``=======`` and a two-line heading in the README, which renders as garbage on PyPI)."""
from pathlib import Path

import pytest
from docutils.core import publish_doctree
from docutils.utils import SystemMessage

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.rst", ROOT / "CHANGELOG.rst", *sorted((ROOT / "docs").glob("*.rst"))]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_document_parses_without_warnings(path):
    text = path.read_text(encoding="utf-8")
    assert not [line for line in text.splitlines() if line.startswith(("<<<<<<< ", ">>>>>>> "))]
    try:
        publish_doctree(text, source_path=str(path), settings_overrides={
            "report_level": 5, "halt_level": 2, "file_insertion_enabled": False})
    except SystemMessage as exc:
        pytest.fail(f"{path.relative_to(ROOT)}: {exc}")

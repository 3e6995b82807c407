"""The documentation's examples run: every fenced block marked ``<!-- runs in tests/docs/test_docs.py -->`` in the
README and docs/ is executed here (Python blocks in a fresh namespace, in a temporary folder), so an example that stops
working fails the suite."""
import re

import pytest

from conftest import REPO_ROOT

ROOT = REPO_ROOT
MARKER = "<!-- runs in tests/docs/test_docs.py -->"
_BLOCK = re.compile(re.escape(MARKER) + r"\n```(\w+)\n(.*?)\n```", re.S)


def marked_blocks():
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            blocks.append(pytest.param(match.group(1), match.group(2), id=f"{path.name}:{line}"))
    return blocks


def test_the_marker_is_used():
    assert len(marked_blocks()) >= 5


@pytest.mark.parametrize("language, code", marked_blocks())
def test_marked_example_runs(language, code, tmp_path, monkeypatch):
    assert language == "python", "only Python examples are run here"
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs__"})

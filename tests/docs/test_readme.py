"""The README's contract: two commands at the top, and .ci/run runs the second one verbatim."""
import re

from conftest import REPO_ROOT

ROOT = REPO_ROOT


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_starts_with_the_two_commands():
    train, tests = _readme_commands()[:2]
    assert "captionkit train" in train and train.startswith("pip install")
    assert "pytest" in tests and tests.startswith("pip install")


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _readme_commands()[1] in ci_lines

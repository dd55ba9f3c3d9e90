"""``ruff check .`` finds nothing: the rules are pyproject.toml's [tool.ruff] (E4, E7, E9, F)."""
from __future__ import annotations

import shutil
import subprocess
import sys

from tests.support.procs import ROOT


def ruff_command():
    """ruff from this interpreter's environment (requirements-dev.txt pins it), else from PATH."""
    try:
        import ruff  # noqa: F401  (the package only ships the binary)
        return [sys.executable, "-m", "ruff"]
    except ImportError:
        found = shutil.which("ruff")
        assert found, "ruff is not installed: pip install -r requirements-dev.txt"
        return [found]


def test_ruff_check_finds_nothing():
    done = subprocess.run([*ruff_command(), "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, "ruff check . found:\n" + done.stdout + done.stderr


def test_the_rules_are_the_ones_the_project_names():
    done = subprocess.run([*ruff_command(), "check", "--show-settings", "tests/unit/test_lint.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    settings = done.stdout
    # the selection CI promises (E4, E7, E9, F) is really on: one rule of each family
    for rule in ("unused-import (F401)", "undefined-name (F821)", "multiple-imports-on-one-line (E401)",
                 "bare-except (E722)", "io-error (E902)"):
        assert rule in settings, f"{rule} is not selected"


def test_a_finding_fails_the_check(tmp_path):
    """The check is live: a planted unused import under the project's configuration is reported."""
    planted = tmp_path / "planted.py"
    planted.write_text("import os\n")
    done = subprocess.run([*ruff_command(), "check", "--no-cache", "--config", f"{ROOT}/pyproject.toml",
                           "--output-format", "concise", str(planted)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "F401" in done.stdout

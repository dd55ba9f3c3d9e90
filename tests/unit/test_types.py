"""``mypy`` finds nothing in ``tornado_app/`` and ``handlers/`` (pyproject.toml's [tool.mypy]; issue 21)."""
from __future__ import annotations

import shutil
import subprocess
import sys

from tests.support.procs import ROOT


def mypy_command():
    """mypy from this interpreter's environment (requirements-dev.txt pins it), else from PATH."""
    try:
        import mypy  # noqa: F401
        return [sys.executable, "-m", "mypy"]
    except ImportError:
        found = shutil.which("mypy")
        assert found, "mypy is not installed: pip install -r requirements-dev.txt"
        return [found]


def test_mypy_finds_nothing():
    # the files to check are the configuration's (tornado_app, handlers); its cache (.mypy_cache,
    # which mypy keeps out of git itself) makes the runs after the first one quick
    done = subprocess.run([*mypy_command(), "--no-error-summary", "--show-error-codes"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, "mypy found:\n" + done.stdout + done.stderr


def test_a_type_error_fails_the_check(tmp_path):
    """The check is live: a planted error under the project's configuration is reported."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f(x: int) -> str:\n    return x\n")
    done = subprocess.run([*mypy_command(), "--config-file", f"{ROOT}/pyproject.toml", "--no-incremental",
                           str(planted)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "[return-value]" in done.stdout

"""The tests' layout (issue 21, item 6): test modules in folders that mirror the code, helpers
in tests/support/ and never named like tests, every folder a package, markers by folder.

The tests root holds only conftest.py and __init__.py; a new test module goes in the folder of
the code it tests (README's "Layout" names them), a shared helper in tests/support/.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.conftest import FOLDER_MARKERS, STORAGE_MODULES
from tests.support.procs import ROOT

TESTS = os.path.join(ROOT, "tests")
FOLDERS = sorted(name for name in os.listdir(TESTS)
                 if os.path.isdir(os.path.join(TESTS, name)) and not name.startswith((".", "__")))


def defines_tests(path):
    """True if the module defines a ``test_*`` function or a ``Test*`` class."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    return any((isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"))
               or (isinstance(node, ast.ClassDef) and node.name.startswith("Test"))
               for node in tree.body)


def test_the_tests_root_holds_no_module_but_conftest():
    stray = sorted(name for name in os.listdir(TESTS)
                   if name.endswith(".py") and name not in ("conftest.py", "__init__.py"))
    assert stray == [], f"move these into a folder of tests/ (or tests/support/ for helpers): {stray}"


def test_the_folders_mirror_the_code():
    for folder in ("api", "streams", "browser", "cluster", "storage", "unit", "support"):
        assert folder in FOLDERS


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_folder_is_a_package(folder):
    # tests.<folder>.test_x: two folders may then hold modules of the same name
    assert os.path.isfile(os.path.join(TESTS, folder, "__init__.py")), f"tests/{folder}/__init__.py is missing"


@pytest.mark.parametrize("folder", FOLDERS)
def test_test_modules_define_tests_and_helpers_are_not_named_like_tests(folder):
    for name in sorted(os.listdir(os.path.join(TESTS, folder))):
        if not name.endswith(".py") or name in ("__init__.py", "conftest.py"):
            continue
        path = os.path.join(TESTS, folder, name)
        if folder == "support":
            assert not name.startswith("test_"), f"tests/support/{name}: a helper named like a test"
            assert not defines_tests(path), f"tests/support/{name} defines tests: move them to a test folder"
        else:
            assert name.startswith("test_"), f"tests/{folder}/{name}: helpers go in tests/support/"
            assert defines_tests(path), f"tests/{folder}/{name} is named like a test but defines none"


def test_no_test_module_is_nested_deeper():
    for folder in FOLDERS:
        for name in os.listdir(os.path.join(TESTS, folder)):
            if os.path.isdir(os.path.join(TESTS, folder, name)) and name != "__pycache__":
                pytest.fail(f"tests/{folder}/{name}: one level of folders only")


def test_marked_folders_and_modules_exist():
    for folder in FOLDER_MARKERS:
        assert folder in FOLDERS, f"conftest.FOLDER_MARKERS names tests/{folder}, which does not exist"
    present = {name[:-3] for folder in FOLDERS for name in os.listdir(os.path.join(TESTS, folder))
               if name.endswith(".py")}
    missing = sorted(STORAGE_MODULES - present)
    assert missing == [], f"conftest.STORAGE_MODULES names modules that do not exist: {missing}"


def test_markers_follow_the_folders():
    """``-m`` selects whole folders: browser, cluster and storage tests by where they live."""
    folders = ["tests/browser", "tests/cluster", "tests/storage", "tests/unit/test_lint.py"]

    def collect(*args):
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args, *folders],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return {line for line in done.stdout.splitlines() if "::" in line}

    everything = collect()
    for marker, folder in (("browser", "tests/browser/"), ("cluster", "tests/cluster/"),
                           ("storage", "tests/storage/")):
        chosen = collect("-m", marker)
        expected = {nodeid for nodeid in everything if nodeid.startswith(folder)}
        assert expected and expected <= chosen, f"-m {marker} misses tests of {folder}"
        assert not any(nodeid.startswith("tests/unit/") for nodeid in chosen)


def test_no_test_module_imports_from_another():
    """Shared helpers live in tests/support/: a test module imports from there, never from a test module."""
    offenders = []
    for folder in FOLDERS:
        for name in sorted(os.listdir(os.path.join(TESTS, folder))):
            if not name.endswith(".py"):
                continue
            path = os.path.join(TESTS, folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                modules = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                if any(part.startswith("test_") for m in modules for part in m.split(".")[1:]):
                    offenders.append(f"tests/{folder}/{name}:{node.lineno}")
    assert offenders == [], f"imports from a test module (move the helper to tests/support/): {offenders}"

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


PRINT_MARKERS = """
def pytest_collection_finish(session):
    for item in session.items:
        print("MARKERS", item.nodeid, ",".join(sorted({m.name for m in item.iter_markers()})))
"""


def test_markers_follow_the_folders(tmp_path):
    """Every collected test carries its folder's markers (browser, cluster, storage), none other's."""
    (tmp_path / "print_markers.py").write_text(PRINT_MARKERS)
    one_of_each = []
    for folder in ("browser", "cluster", "storage", "unit"):
        one_of_each.append(f"tests/{folder}/" + min(name for name in os.listdir(os.path.join(TESTS, folder))
                                                     if name.startswith("test_") and name.endswith(".py")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "print_markers",
                           *one_of_each], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = {}
    for line in done.stdout.splitlines():
        if line.startswith("MARKERS "):
            _, nodeid, markers = (line.split(" ", 2) + [""])[:3]
            seen[nodeid] = set(markers.split(",")) - {""}
    for folder, marker in (("browser", "browser"), ("cluster", "cluster"), ("storage", "storage")):
        items = {nodeid: got for nodeid, got in seen.items() if nodeid.startswith(f"tests/{folder}/")}
        assert items, f"nothing collected from tests/{folder}"
        for nodeid, got in items.items():
            assert marker in got, f"{nodeid} lacks the {marker} marker"
    unit = {nodeid: got for nodeid, got in seen.items() if nodeid.startswith("tests/unit/")}
    assert unit and not any(got & {"browser", "cluster", "storage"} for got in unit.values())


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

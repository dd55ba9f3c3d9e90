"""@squall/client (issue 24): the package's own tests run from the README's single test
command. ``node --test`` runs clients/js/test (the pure parts, a local HTTP server, and a
real ``python run.py`` started with this interpreter), ``tsc --noEmit`` checks the
declarations against a typed usage file, and the package installs from the repository
into a fresh directory and imports in Node (acceptance 1, 2, 6 and 8)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")


def run(args, cwd, timeout=300, **env):
    """Run ``args``; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def node_modules():
    """``npm ci`` once when the lockfile's devDependencies (typescript) are missing."""
    assert NODE and NPM, "node and npm are needed (Node 20+)"
    if not (PACKAGE / "node_modules" / "typescript" / "package.json").exists():
        run([NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"], PACKAGE)
    return PACKAGE / "node_modules"


def test_node_major_version_is_20_or_later():
    assert NODE, "node is needed"
    major = int(run([NODE, "--version"], ROOT).strip().lstrip("v").split(".")[0])
    assert major >= 20


def test_node_test_runner_passes():
    """Every clients/js/test/*.test.js, the WebSocket rung included (Node 20 needs the flag)."""
    out = run([NODE, "--experimental-websocket", "--test", "--test-reporter=spec", "test/"], PACKAGE,
              timeout=600, SQUALL_PYTHON=sys.executable)
    assert "ℹ fail 0" in out, out[-3000:]
    assert "ℹ skipped 0" in out, "the WebSocket rung was skipped:\n" + out[-3000:]
    passed = int(out.split("ℹ pass ")[1].split()[0])
    assert passed >= 30, out[-3000:]


def test_declarations_type_check(node_modules):
    run([str(node_modules / ".bin" / "tsc"), "--noEmit", "-p", "tsconfig.json"], PACKAGE)


def test_declarations_reject_wrong_usage(node_modules, tmp_path):
    """The check can fail: a usage file that misuses the API does not compile."""
    bad = PACKAGE / "test" / "types" / "_wrong_usage.ts"
    bad.write_text('import { createSquall } from "@squall/client";\n'
                   'createSquall({ url: "x" });\n'
                   'createSquall({ getToken: () => 1 }).on("unread", (u) => u.nope);\n')
    config = PACKAGE / "_tsconfig.wrong.json"
    config.write_text(json.dumps({"extends": "./tsconfig.json", "files": ["src/index.d.ts", "test/types/_wrong_usage.ts"]}))
    try:
        proc = subprocess.run([str(node_modules / ".bin" / "tsc"), "--noEmit", "-p", config.name], cwd=PACKAGE,
                              capture_output=True, text=True, timeout=300)
    finally:
        bad.unlink()
        config.unlink()
    assert proc.returncode != 0
    assert "getToken" in proc.stdout
    assert "nope" in proc.stdout


def test_installs_from_the_repository_into_a_fresh_directory(tmp_path):
    """Acceptance 6 (clients/js): ``npm install <repo>/clients/js`` and import it in Node."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "private": True, "type": "module"}))
    # --install-links: copy the package as npm would from a registry (its "files"), not a symlink.
    run([NPM, "install", "--offline", "--no-audit", "--no-fund", "--install-links", str(PACKAGE)], app)
    installed = app / "node_modules" / "@squall" / "client"
    assert installed.is_dir() and not installed.is_symlink()
    assert (installed / "src" / "index.d.ts").exists()
    assert not (installed / "test").exists()
    assert not (installed / "node_modules").exists()
    manifest = json.loads((app / "package.json").read_text())
    assert "@squall/client" in manifest["dependencies"]
    out = run([NODE, "--input-type=module", "-e",
               'import { createSquall, backoffDelay, SseParser } from "@squall/client";\n'
               'const s = createSquall({ url: "http://127.0.0.1:9", getToken: () => "t" });\n'
               'console.log(typeof s.start, s.getState().status.state, backoffDelay(0, { random: () => 0 }),'
               ' new SseParser().feed("retry: 1\\n\\n").length);'], app)
    assert out.split() == ["function", "idle", "0", "0"]
    # Only the exports map is public: a deep import is refused.
    proc = subprocess.run([NODE, "--input-type=module", "-e", 'import "@squall/client/src/stream.js";'], cwd=app,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "ERR_PACKAGE_PATH_NOT_EXPORTED" in proc.stderr

"""@squall/react and the example app (issue 24): the package's ``node --test`` (the React-free
store, StrictMode's double effect against a local stream, the hooks rendered by
react-dom/server), ``tsc --noEmit`` on its declarations (and a misuse that must not compile),
``tsc --noEmit`` on examples/react-chat (which holds the README's two snippets verbatim), and
both packages installed from the repository into fresh directories with React 18 and 19,
imported in Node and, bundled by esbuild, in Chromium (acceptance 2, 6 and 8)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.browser import TIMEOUT_MS, browser  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "react"
CLIENT = ROOT / "clients" / "js"
EXAMPLE = ROOT / "examples" / "react-chat"
README = ROOT / "README.md"
NODE = shutil.which("node")
NPM = shutil.which("npm")
# The two snippets, as the notification system documented them.
SNIPPETS = [
    "const { hasUnreadMessages, notifications, clearNotifications } = useChatNotifications({\n"
    "  onNewMessage: (notification) => console.log('New message received:', notification),\n});",
    "const { socket, notifications, setOnNewMessage } = useWebSocket();",
]


def lines(text: str) -> str:
    """``text`` with each line's indentation removed (a snippet inside a function is the same code)."""
    return "\n".join(line.strip() for line in text.splitlines())


def run(args, cwd, timeout=300, **env):
    """Run ``args``; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def npm_ci(folder: Path) -> Path:
    """``npm ci`` in ``folder`` once, when its lockfile's typescript is missing."""
    assert NODE and NPM, "node and npm are needed (Node 20+)"
    if not (folder / "node_modules" / "typescript" / "package.json").exists():
        run([NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"], folder)
    return folder / "node_modules"


@pytest.fixture(scope="module")
def react_modules():
    # @squall/client is linked (file:../js) and has no runtime dependency: its own npm ci is not needed.
    return npm_ci(PACKAGE)


@pytest.fixture(scope="module")
def example_modules():
    return npm_ci(EXAMPLE)


def test_node_test_runner_passes(react_modules):
    out = run([NODE, "--test", "--test-reporter=spec", "test/"], PACKAGE, timeout=300)
    assert "ℹ fail 0" in out, out[-3000:]
    assert "ℹ skipped 0" in out, out[-3000:]
    assert int(out.split("ℹ pass ")[1].split()[0]) >= 16, out[-3000:]


def test_declarations_type_check(react_modules):
    run([str(react_modules / ".bin" / "tsc"), "--noEmit", "-p", "tsconfig.json"], PACKAGE)


def test_declarations_reject_wrong_usage(react_modules):
    """The check can fail: misused hooks do not compile."""
    bad = PACKAGE / "test" / "types" / "_wrong_usage.tsx"
    bad.write_text('import { useChat, useChatNotifications } from "@squall/react";\n'
                   'export function A() { const c = useChat(1); void c.nope; '
                   'useChatNotifications({ onNewMessage: (n) => n.content_preview.toFixed() }); return null; }\n')
    config = PACKAGE / "_tsconfig.wrong.json"
    config.write_text(json.dumps({"extends": "./tsconfig.json", "files": ["src/index.d.ts", "test/types/_wrong_usage.tsx"]}))
    try:
        proc = subprocess.run([str(react_modules / ".bin" / "tsc"), "--noEmit", "-p", config.name], cwd=PACKAGE,
                              capture_output=True, text=True, timeout=300)
    finally:
        bad.unlink()
        config.unlink()
    assert proc.returncode != 0
    assert "nope" in proc.stdout
    assert "toFixed" in proc.stdout


def test_the_example_app_type_checks_and_holds_the_readme_snippets(example_modules):
    """Acceptance 2 (the example) and 5 (the README's snippets work unchanged: the example
    compiles them as they are printed)."""
    app = lines((EXAMPLE / "src" / "App.tsx").read_text())
    readme = README.read_text()
    for snippet in SNIPPETS:
        assert lines(snippet) in app, snippet
        assert snippet in readme, snippet
    run([str(example_modules / ".bin" / "tsc"), "--noEmit", "-p", "tsconfig.json"], EXAMPLE)


def test_the_example_builds(example_modules, tmp_path):
    run([NODE, "build.mjs"], EXAMPLE, OUT_DIR=str(tmp_path))
    assert (tmp_path / "index.html").exists()
    bundle = (tmp_path / "app.js").read_text()
    # both packages are in the bundle: the toast's class (@squall/react), a stream path (@squall/client)
    assert "squall-toasts" in bundle and "/ws/notifications" in bundle


# Rendered by react-dom/server in a fresh directory: the installed packages and that React.
NODE_IMPORT = """
import * as React from "react";
import { renderToString } from "react-dom/server";
import { createSquall } from "@squall/client";
import { WebSocketProvider, useChatNotifications, useWebSocket } from "@squall/react";
const client = createSquall({ url: "http://127.0.0.1:9", getToken: () => "t", shareAcrossTabs: false });
client.handleFrame({ type: "unread", total: 2, chats: { 1: 2 } });
function Dot() {
  const { hasUnreadMessages, unreadCount } = useChatNotifications({ onNewMessage: () => {} });
  const { status } = useWebSocket();
  return React.createElement("b", null, `${hasUnreadMessages} ${unreadCount} ${status}`);
}
console.log(React.version.split(".")[0], renderToString(React.createElement(React.StrictMode, null,
  React.createElement(WebSocketProvider, { client }, React.createElement(Dot)))));
"""

# Bundled by esbuild (development React: StrictMode's double effects) and run in Chromium:
# getToken fails, so the client ends "unauthorized" after exactly one call.
BROWSER_ENTRY = """
import * as React from "react";
import { createRoot } from "react-dom/client";
import { WebSocketProvider, useWebSocket } from "@squall/react";
window.tokenCalls = 0;
function Status() { const { status } = useWebSocket(); return React.createElement("p", { id: "status" }, status); }
createRoot(document.getElementById("root")).render(React.createElement(React.StrictMode, null,
  React.createElement(WebSocketProvider, { url: "http://127.0.0.1:9",
    getToken: () => { window.tokenCalls += 1; throw new Error("no token"); } }, React.createElement(Status))));
window.reactMajor = React.version.split(".")[0];
"""


def fresh_install(folder: Path, react: str) -> Path:
    """``npm install ./clients/js ./clients/react`` (copied, as from a registry) and React ``react``."""
    folder.mkdir()
    (folder / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "private": True,
                                                     "type": "module"}))
    run([NPM, "install", "--prefer-offline", "--no-audit", "--no-fund", "--install-links", str(CLIENT), str(PACKAGE),
         f"react@{react}", f"react-dom@{react}", "esbuild@0.25.9"], folder)
    installed = folder / "node_modules" / "@squall" / "react"
    assert installed.is_dir() and not installed.is_symlink()
    assert (installed / "src" / "index.d.ts").exists() and not (installed / "test").exists()
    return folder


@pytest.mark.parametrize("react", ["18.3.1", "19.2.1"])
def test_installs_into_a_fresh_directory_and_imports_in_node_and_chromium(react, tmp_path, browser):  # noqa: F811
    app = fresh_install(tmp_path / "app", react)
    (app / "render.mjs").write_text(NODE_IMPORT)
    out = run([NODE, "render.mjs"], app).strip()
    assert out == f"{react.split('.')[0]} <b>true 2 idle</b>", out

    (app / "entry.js").write_text(BROWSER_ENTRY)
    run([NODE, "-e", 'require("esbuild").buildSync({entryPoints: ["entry.js"], bundle: true, format: "iife",'
         ' outfile: "bundle.js", define: {"process.env.NODE_ENV": "\\"development\\""}})'], app)
    page = browser.new_page()
    try:
        page.set_default_timeout(TIMEOUT_MS)
        page.set_content("<!doctype html><html lang='en'><title>app</title><div id='root'></div></html>")
        page.add_script_tag(content=(app / "bundle.js").read_text())
        page.wait_for_function("document.getElementById('status')?.textContent === 'unauthorized'")
        page.wait_for_timeout(500)
        assert page.evaluate("[window.reactMajor, window.tokenCalls]") == [react.split(".")[0], 1]
    finally:
        page.close()

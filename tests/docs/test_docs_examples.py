"""Every curl example of README.md and docs/*.md runs as written (issue 20, acceptance 6).

A curl example is a fenced ``sh``/``bash``/``console`` block that mentions ``curl``. The blocks
of one document run in document order in one bash session, against a fresh ``python run.py``
child started the way the README starts it (``SERVICE_TOKEN=s3cret``), so the variables a
block sets (``$TOKEN``, ``$BOB``, …) reach the blocks after it, as in a reader's terminal. The
only edit to the text is the address: ``http://localhost:8000`` and ``http://127.0.0.1:8000``
become the child's free port.

- ``sh``/``bash`` blocks run whole. A block whose last command is a foreground ``curl -N`` is
  a terminal of its own (the README's second terminal): it runs in a bash of its own, with
  only what it sets itself, while the document goes on; its output must show the events of
  the ``text`` block the document shows for it.
- ``console`` blocks run their ``$ `` lines (and their ``\\`` continuations); the other lines
  are the output the document shows.
- ``curl`` is a bash function around the real one: it records each call's HTTP status and
  exit status, and bounds streams (``-N``) with ``--max-time``: a few seconds in the
  foreground, longer in the background (the document stops those itself with ``kill``).
- A block fails when a command fails (an ``ERR`` trap names its line), when a call answers
  400 or more that the document does not show as an error (shown as
  ``{"error":{"code":…}}`` in the output or a ``# {"error":…}`` comment, and then the answer
  must carry that code), when curl fails, or when a block with a stream or a long-poll does
  not print every event ``type`` the document shows for it.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import pytest

from tests.support.markdown import CODE, ROOT, fenced_blocks
DOCUMENTS = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
RUN_LANGS = {"sh", "bash", "console"}
SERVICE_TOKEN = "s3cret"  # the README starts the server with SERVICE_TOKEN=s3cret
FOREGROUND_STREAM_SECONDS = 3  # a foreground stream shows its replay at once; then the test ends it
BACKGROUND_STREAM_SECONDS = 25  # a background stream is ended by the document's own `kill`
BLOCK_TIMEOUT = 40

TYPE = re.compile(r'"type":\s*"([^"]+)"')


def curl_blocks(doc: str) -> list:
    """The blocks to run; a terminal of its own gets the first ``text`` block after it (its output)."""
    blocks = fenced_blocks(doc)
    for i, block in enumerate(blocks):
        if block.lang in RUN_LANGS and block.is_terminal():
            block.follow_text = next(([t for _, t in b.lines] for b in blocks[i + 1:] if b.lang == "text"), [])
    return [b for b in blocks if b.lang in RUN_LANGS and "curl" in b.text]


PRELUDE = r"""
set +e
trap '__rc=$?; printf "%s %s %s\n" "$LINENO" "$__rc" "$BASH_COMMAND" >> "$DOCTEST_DIR/failed.$DOCTEST_BLOCK"' ERR
curl() {
  local id="$BASHPID.$RANDOM$RANDOM" stream=0 max="$DOCTEST_MAX_TIME" a
  for a in "$@"; do case "$a" in -N|--no-buffer|-[a-zA-Z]*N*) stream=1;; esac; done
  if [ "$stream" = 1 ]; then
    max="$DOCTEST_FOREGROUND_STREAM"
    [ "$BASHPID" != "$$" ] && max="$DOCTEST_BACKGROUND_STREAM"
  fi
  printf 'call %s %s\n' "$id" "$stream" >> "$DOCTEST_DIR/calls.$DOCTEST_BLOCK"
  if [ "$stream" = 1 ] && [ "$BASHPID" != "$$" ]; then
    # in the background: be the curl process itself, so that the document's `kill $!` ends it
    exec curl --max-time "$max" -D "$DOCTEST_DIR/head.$id" "$@"  # exec finds the program, not this function
  fi
  command curl --max-time "$max" -D "$DOCTEST_DIR/head.$id" "$@"
  local rc=$?
  printf 'rc %s %s\n' "$id" "$rc" >> "$DOCTEST_DIR/calls.$DOCTEST_BLOCK"
  if [ "$stream" = 1 ] && [ "$rc" = 28 ]; then return 0; fi  # the test's bound on a stream
  return "$rc"
}
"""


class Session:
    """One bash process running blocks one after another (``source`` keeps its variables)."""

    def __init__(self, workdir: Path, env: dict, name: str):
        self.workdir, self.name = workdir, name
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=env, start_new_session=True)
        self._send(PRELUDE)

    def _send(self, text: str) -> None:
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def start(self, key: str, script: str) -> None:
        """Start a block (its output goes to ``out.<key>``); ``wait`` for it."""
        path = self.workdir / f"block.{key}.sh"
        path.write_text(script + "\n", encoding="utf-8")
        self._send(f'DOCTEST_BLOCK={key}; source "{path}" > "$DOCTEST_DIR/out.{key}" 2>&1; '
                   f'echo "__doctest_done__ {key}"')

    def wait(self, key: str, timeout: float) -> None:
        """Wait until the block started as ``key`` has run."""
        deadline, buffer, fd = time.monotonic() + timeout, b"", self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"bash ({self.name}) exited while running block {key}: {buffer!r}")
                buffer += chunk
                if f"__doctest_done__ {key}".encode() in buffer:
                    return
        raise AssertionError(f"block {key} ({self.name}) did not finish in {timeout}s")

    def kill(self) -> None:
        """End the session and everything it left running (background streams, polls)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def call_results(workdir: Path, key: str) -> list:
    """[(HTTP status or None, exit status or None, stream?)] of the block's curl calls."""
    calls, rcs = [], {}
    for line in read(workdir / f"calls.{key}").splitlines():
        kind, ident, value = line.split()
        if kind == "call":
            calls.append((ident, value == "1"))
        else:
            rcs[ident] = int(value)
    results = []
    for ident, stream in calls:
        statuses = re.findall(r"^HTTP/\S+ (\d{3})", read(workdir / f"head.{ident}"), re.M)
        results.append((int(statuses[-1]) if statuses else None, rcs.get(ident), stream))
    return results


def check_block(block: Block, workdir: Path, key: str, output: str, shown_events: list) -> list:
    """Everything wrong with one block's run, as sentences naming the document line."""
    problems = []
    script = block.script()
    for line in read(workdir / f"failed.{key}").splitlines():
        number, rc, command = line.split(" ", 2)
        index = int(number) - 1
        doc_line = script[index][0] if 0 <= index < len(script) else block.line
        problems.append(f"line {doc_line}: `{command}` failed with exit status {rc}")
    expected = block.shown_errors()
    results = call_results(workdir, key)
    errors = [status for status, _, _ in results if status is not None and status >= 400]
    if len(errors) != len(expected):
        problems.append(f"answers with an error status {errors}, but the document shows {expected or 'none'}")
    for code in expected:
        if f'"code":"{code}"' not in output.replace('": "', '":"'):
            problems.append(f"the error {code!r} the document shows is not in the output")
    for status, rc, stream in results:
        if status is None and rc is None:
            continue  # a background call still waiting when the document ended (a long-poll)
        if status is None and not (stream and rc == 28):
            problems.append(f"a curl call got no HTTP answer (curl exit status {rc})")
        elif status is not None and status < 400 and rc not in (None, 0) and not (stream and rc == 28):
            problems.append(f"a curl call answered {status} but curl exited with {rc}")
    if block.streams():
        got = set(TYPE.findall(output))
        missing = [t for t in dict.fromkeys(shown_events) if t not in got]
        if missing:
            problems.append(f"the stream or poll printed no event of type {missing}")
    return problems


def shown_event_types(lines: list) -> list:
    return [t for line in lines for t in TYPE.findall(line)]


def test_every_curl_example_is_in_a_block_that_runs():
    """A curl command in a fenced block of another kind (text, json, none) would never run."""
    strays = [f"{b.where()}" for doc in DOCUMENTS for b in fenced_blocks(doc)
              if b.lang not in RUN_LANGS and re.search(r"^\s*(\$ )?curl ", b.text, re.M)]
    assert strays == [], "curl examples outside sh/bash/console blocks: " + "; ".join(strays)


GNU_ONLY = re.compile(r"\bsed -i\b|\bgrep -P\b|\bdate -d\b|\bdate --date\b|\bbase64 -w\b|\breadlink -f\b|\bxargs -r\b|\bstat -c\b")


def test_examples_work_with_bsd_and_gnu_tools():
    """A reader on macOS pastes the same commands: no option only GNU's tools know."""
    found = [f"{b.where()}: {m.group(0)!r}" for doc in DOCUMENTS for b in fenced_blocks(doc)
             if b.lang in RUN_LANGS for m in GNU_ONLY.finditer(b.text)]
    assert found == [], "GNU-only options in examples: " + "; ".join(found)


def test_the_documents_have_curl_examples():
    """The test below has something to run: the README and the protocol are full of them."""
    assert len(curl_blocks("README.md")) >= 4
    assert len(curl_blocks("docs/protocol.md")) >= 20


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if curl_blocks(d)])
def test_curl_examples_run_as_written(doc, server_factory, tmp_path):
    """Each document's curl blocks, in order, in one bash session against a fresh server."""
    # uploads of the examples go to the test's folder, not the project's ./uploads
    server = server_factory(SERVICE_TOKEN=SERVICE_TOKEN, DATABASE_URL=f"sqlite:///{tmp_path}/docs.db",
                            UPLOAD_DIR=str(tmp_path / "uploads"))
    env = dict(os.environ)
    env.update(DOCTEST_DIR=str(tmp_path), DOCTEST_MAX_TIME="30",
               DOCTEST_FOREGROUND_STREAM=str(FOREGROUND_STREAM_SECONDS),
               DOCTEST_BACKGROUND_STREAM=str(BACKGROUND_STREAM_SECONDS),
               # what the documents assume of the reader's shell: the server's folder, its
               # virtualenv's python, and (for `python run.py admin …`) the server's database
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
               DATABASE_URL=f"sqlite:///{tmp_path}/docs.db", SERVICE_TOKEN=SERVICE_TOKEN,
               PASSWORD_HASH_PROFILE="fast", LOG_LEVEL="warning")
    env.pop("BROKER_URL", None)

    def localize(script: str) -> str:
        return script.replace("http://localhost:8000", server.url).replace("http://127.0.0.1:8000", server.url)

    main = Session(tmp_path, env, "main")
    terminals = []  # (block, session, key): the blocks that are terminals of their own
    failures = []
    try:
        for index, block in enumerate(curl_blocks(doc)):
            key = str(index)
            script = localize("\n".join(t for _, t in block.script()))
            if block.is_terminal():
                terminal_env = dict(env, DOCTEST_FOREGROUND_STREAM=str(BACKGROUND_STREAM_SECONDS))
                session = Session(tmp_path, terminal_env, f"terminal of line {block.line}")
                session.start(key, script)
                terminals.append((block, session, key))
                # the next block may only run once this stream is open, as when typed by hand
                deadline = time.monotonic() + 15
                while "retry:" not in read(tmp_path / f"out.{key}") and time.monotonic() < deadline:
                    time.sleep(0.05)
                if "retry:" not in read(tmp_path / f"out.{key}"):
                    failures.append(f"{block.where()}: the stream did not open:\n{read(tmp_path / f'out.{key}')}")
                continue
            main.start(key, script)
            main.wait(key, BLOCK_TIMEOUT)
            output = read(tmp_path / f"out.{key}")
            problems = check_block(block, tmp_path, key, output, shown_event_types(block.shown()))
            failures += [f"{block.where()}: {p}\n--- output ---\n{output[-3000:]}" for p in problems]
        for block, session, key in terminals:
            wanted = shown_event_types(block.follow_text)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                got = set(TYPE.findall(read(tmp_path / f"out.{key}")))
                if all(t in got for t in wanted):
                    break
                time.sleep(0.05)
            session.kill()
            output = read(tmp_path / f"out.{key}")
            problems = check_block(block, tmp_path, key, output, wanted)
            failures += [f"{block.where()} (a terminal of its own): {p}\n--- output ---\n{output[-3000:]}"
                         for p in problems]
    finally:
        main.kill()
        for _, session, _ in terminals:
            session.kill()
    assert not failures, "\n\n".join(failures) + "\n--- server log ---\n" + server.log()[-3000:]

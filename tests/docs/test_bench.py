"""The benchmark suite runs end to end in its tiny configuration and reports every field.

No timing is asserted: the point is that ``python -m bench`` never rots. The benchmark runs
Squall on SQLite and on PostgreSQL itself, whatever the suite's database, so the suite's
PostgreSQL run (``TEST_DATABASE_URL``) skips this module: it would repeat the SQLite run's work.
"""
import base64
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.support.procs import ROOT

pytestmark = pytest.mark.same_in_both_runs

FANOUT_FIELDS = {"deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
                 "server_cpu_us_per_delivery", "peak_rss_mb", "loadgen_cpu_pct", "deliveries",
                 "expected_deliveries", "complete"}
IDLE_FIELDS = {"ws_kb_per_connection", "sse_kb_per_connection", "ws_connects_per_s", "sse_connects_per_s",
               "ws_cpu_ms_per_open", "sse_cpu_ms_per_open", "ws_connect_loadgen_cpu_pct",
               "sse_connect_loadgen_cpu_pct", "distinct_users", "concurrent_connections", "broadcast_reached",
               "connect_errors"}
TARGETED_FIELDS = {"users", "ws_streams", "sse_streams", "batch", "requests", "notifications", "stored", "delivered",
                   "complete", "exactly_once", "foreign", "missing", "duplicates", "notifications_per_s",
                   "requests_per_s", "latency_p50_ms", "latency_p99_ms", "server_cpu_us_per_notification",
                   "loadgen_cpu_pct", "connects_per_s", "connect_errors", "publish_errors"}
CHAT_FIELDS = {"messages_per_s", "ack_p50_ms", "ack_p99_ms", "delivery_p50_ms", "delivery_p99_ms",
               "server_cpu_us_per_message", "loadgen_cpu_pct", "acked", "delivered", "errors", "complete"}


@pytest.mark.slow
def test_bench_tiny_reports_every_field(tmp_path):
    """``python -m bench all --tiny`` runs Squall and the baseline and writes the report and JSON."""
    pg_url = "postgresql://postgres@127.0.0.1:5432/squall_bench_test"
    proc = subprocess.run([sys.executable, "-m", "bench", "all", "--tiny", "--runs", "1", "--no-profile",
                           "--pg-url", pg_url, "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "bench-results.json").read_text())
    servers = ["squall", "squall-asyncio", "baseline"]
    if doc["nchan"]["measured"]:  # an optional peer: skipped with a note when not installed
        servers.append("nchan")
    else:
        assert "libnginx-mod-nchan" in doc["nchan"]["note"], doc["nchan"]
    for server in servers:
        for case in ("ws_burst", "sse_burst", "ws_rate", "sse_rate"):
            med = doc["fanout"][server][case]["median"]
            assert FANOUT_FIELDS <= set(med), (server, case, sorted(med))
            # every notification reached every subscriber (a count, not a timing)
            assert med["complete"] and med["deliveries"] == med["expected_deliveries"], med
        idle = doc["idle"][server]["median"]
        assert IDLE_FIELDS <= set(idle), (server, sorted(idle))
        assert idle["broadcast_reached"] == idle["concurrent_connections"] == 80, idle
        assert idle["connect_errors"] == 0, idle
        assert idle["distinct_users"] == 80, idle  # each connection a different user
        assert idle["opened_on"] == "first event", idle  # Squall's open includes auth and the unread frame
    # The plain baseline (bench/baseline.py --plain, issue 26 item 6): the same 80 upgrades, each a different
    # user's token, open at the 101 / the SSE headers; nothing is sent, so no broadcast to check.
    plain = doc["idle"]["baseline-plain"]["median"]
    assert IDLE_FIELDS <= set(plain), sorted(plain)
    assert plain["opened_on"] == "response head" and plain["broadcast_reached"] is None, plain
    assert plain["ws_connections"] == plain["sse_connections"] == 40 and plain["distinct_users"] == 80, plain
    assert plain["connect_errors"] == 0 and plain["dropped"] == 0, plain
    assert plain["ws_connects_per_s"] > 0 and plain["sse_connects_per_s"] > 0, plain
    assert len(doc["idle"]["baseline-plain"]["runs"]) == len(doc["idle"]["squall"]["runs"]) == 1
    hold = doc["idle_max"]["squall"]  # the most connections held by one process (100 in tiny)
    assert IDLE_FIELDS <= set(hold) and hold["broadcast_reached"] == hold["concurrent_connections"] == 100, hold
    # Targeted notifications: every case of every database, each user got exactly its own.
    # "baseline": bare Tornado answering the same requests (nothing stored), interleaved with SQLite's runs.
    cases = {"sqlite": {"batch1", "batch10", "batch100", "rate"}, "postgres": {"batch100"},
             "baseline": {"batch1", "batch10", "batch100"}}
    for db, wanted in cases.items():
        assert set(doc["targeted"][db]) == wanted, (db, sorted(doc["targeted"][db]))
        for case in wanted:
            med = doc["targeted"][db][case]["median"]
            assert TARGETED_FIELDS <= set(med), (db, case, sorted(TARGETED_FIELDS - set(med)))
            assert med["exactly_once"] and med["complete"], med
            assert med["foreign"] == med["missing"] == med["duplicates"] == 0, med
            assert med["stored"] == med["delivered"] == med["notifications"] == 200, med
            assert med["connect_errors"] == med["publish_errors"] == 0, med
    for db in ("sqlite", "postgres"):
        for case in ("burst", "rate"):
            med = doc["chat"][db][case]["median"]
            assert CHAT_FIELDS <= set(med), (db, case, sorted(med))
            assert med["complete"] and med["errors"] == 0, med
            assert med["acked"] == med["delivered"] == med["messages"], med
    # Chat with webhooks off, to a receiver that answers, to one that stalls (issue 23, acceptance 6)
    for label in ("off", "receiver_ok", "receiver_stalled"):
        for case in ("burst", "rate"):
            med = doc["webhooks"][label][case]["median"]
            assert CHAT_FIELDS <= set(med), (label, case, sorted(med))
            assert med["complete"] and med["errors"] == 0, med
    assert doc["webhooks"]["received"]["receiver_ok"] > 0 and doc["webhooks"]["received"]["receiver_stalled"] > 0
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"]
    report = (tmp_path / "performance.md").read_text()
    for heading in ("## Machine", "## Targets (issues 6, 13 and 26)", "## Notification fan-out",
                    "## Idle connections", "## Targeted notifications", "## Chat",
                    "## Chat while the webhook receiver stalls"):
        assert heading in report
    targets = report.split("## Targets (issues 6, 13 and 26)")[1].split("## Notification fan-out")[0]
    rows = [line.split(" | ") for line in targets.splitlines() if line.startswith("| 6.") or line.startswith("| 13.")]
    assert len(rows) == 26, len(rows)  # the unmeasured python-socketio reference row is gone (issue 20, item 19)
    # the targeted section shows bare Tornado's rows and ratios, and the targets the 1-per-request ceiling
    assert "bare Tornado (stores nothing)" in report and "requests/s, Squall ÷ bare Tornado" in report
    assert "At 1 user per request every notification is one HTTP request." in targets
    for row in rows:  # every target row has a measured value (column 3) and a verdict (column 6)
        assert row[2] != "—" and row[5].strip(" |") in ("**yes**", "**no**"), row
    # issue 26, item 6: connects against the plain baseline, single publishes, PostgreSQL / SQLite
    rows26 = [line.split(" | ") for line in targets.splitlines() if line.startswith("| 26.6 |")]
    assert [(r[1], r[4]) for r in rows26] == [
        ("WS connects/s, Squall / a plain Tornado handler that verifies nothing", "≥ 0.9"),
        ("SSE connects/s, Squall / a plain Tornado handler that verifies nothing", "≥ 0.9"),
        ("targeted notifications/s at 1 user per request, Squall / bare Tornado (same requests)", "≥ 0.8"),
        ("targeted notifications/s, PostgreSQL / SQLite (100 per request)", "≥ 0.8")], rows26
    for row in rows26:
        assert row[2] != "—" and float(row[2].split(" ")[0].replace(",", "")) > 0, row
        assert row[5].strip(" |") in ("**yes**", "**no**"), row
    # the bare-Tornado connect rows of issue 13 stay beside them
    assert "| 13.1 | WS connects/s with auth and an unread event, Squall / bare Tornado |" in targets
    assert "the plain baseline (`bench/baseline.py --plain`) was opened with the load generator at" in targets


def _head_then_silence(port: int, request: bytes, quiet: float = 0.3):
    """Send ``request`` on a fresh socket; ``(response head, what else arrived within quiet seconds)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        sock.settimeout(quiet)
        try:
            more = sock.recv(4096)
            rest += more if more else b"<closed>"
        except socket.timeout:
            pass
        return head.decode("latin-1"), rest


def test_plain_baseline_verifies_nothing_and_sends_nothing(tmp_path):
    """``python -m bench.baseline --plain``: a garbage token gets a 101 and no frame, or a 200 event
    stream and no event (issue 26, item 6: the reference for connects/s)."""
    from bench.servers import baseline
    server = baseline(str(tmp_path), {"server": []}, plain=True).start()
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        head, rest = _head_then_silence(server.port, (
            f"GET /ws/notifications?access_token=not-a-token HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        assert head.startswith("HTTP/1.1 101 "), head
        assert rest == b"", rest  # no frame (no unread state, no ping) and not closed
        head, rest = _head_then_silence(server.port, (
            f"GET /sse/notifications?access_token=not-a-token HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Accept: text/event-stream\r\n\r\n").encode())
        assert head.startswith("HTTP/1.1 200 "), head
        assert "content-type: text/event-stream" in head.lower(), head
        assert rest == b"", rest  # no event, not even an empty chunk, and not closed
        # nothing else is served: no publish API
        head, _ = _head_then_silence(server.port, (
            f"POST /api/notifications HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 2\r\n\r\n"
            "{}").encode(), quiet=0.05)
        assert head.startswith("HTTP/1.1 404 "), head
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log()


def test_bench_login_flood_tiny(tmp_path):
    """``python -m bench login --tiny``: good logins during a flood of bad ones (only statuses asserted)."""
    proc = subprocess.run([sys.executable, "-m", "bench", "login", "--tiny", "--runs", "1", "--no-profile",
                           "--no-pg", "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    login = json.loads((tmp_path / "bench-results.json").read_text())["login"]
    assert login["good_login_ok"] and set(login["good_login_statuses"]) == {"200"}, login
    assert set(login["flood_statuses"]) <= {"401", "429", "503"}, login
    assert "## Login under a flood" in (tmp_path / "performance.md").read_text()


# python -m bench compare (issue 21, acceptance 5) ----------------------------------------------

def _bench(args, tmp_path, timeout=240):
    # Temporary files (the compare's checkout) under the test's own folder: another
    # comparison running on this machine meanwhile is told apart by its place.
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "bench", *args, "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TMPDIR": str(scratch)})


def _worktrees() -> str:
    return subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def temporary_checkouts(tmp_path) -> set:
    """The temporary checkouts of ``bench compare`` runs of this test (made under its folder)."""
    return {line for line in _worktrees().splitlines() if "squall-compare-" in line and str(tmp_path) in line}


def test_bench_compare_tiny_against_head(tmp_path):
    """``compare --ref HEAD --tiny``: both trees measured, interleaved, figures and verdicts stored and rendered."""
    from bench.compare import FIGURES, SIDES
    # results of an earlier ``python -m bench`` run in the same place stay beside the comparison
    (tmp_path / "bench-results.json").write_text(json.dumps({"notes": "an earlier run, kept"}))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    proc = _bench(["compare", "--ref", "HEAD", "--tiny", "--size", "events=8", "--notes", "tiny, in the test"],
                  tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert temporary_checkouts(tmp_path) == set()  # the temporary checkout of this run is gone
    doc = json.loads((tmp_path / "bench-results.json").read_text())
    assert doc["notes"] == "an earlier run, kept"
    c = doc["compare"]
    assert c["ref"] == "HEAD" and c["ref_commit"] == head and c["head"] == head and c["runs"] == 2
    assert c["scenarios"] == ["fanout", "idle", "chat", "targeted"] and c["notes"] == "tiny, in the test"
    assert c["sizes"]["events"] == 8 and c["sizes"]["idle_ws"] == 40  # --size over the tiny sizes
    assert c["machine"]["cores"] >= 1 and c["date"].endswith("UTC")
    # every scenario ran on both sides, two runs each, everything delivered
    assert c["checks"] == {side: {"fanout": True, "idle": True, "chat": True, "targeted": True} for side in SIDES}
    for side in SIDES:
        assert len(c["results"]["idle"][side]["runs"]) == 2
        assert c["results"]["idle"][side]["median"]["concurrent_connections"] == 80
        assert len(c["results"]["fanout"][side]["ws_burst"]["runs"]) == 2
        assert c["results"]["fanout"][side]["ws_burst"]["median"]["deliveries"] == 20 * 8
        assert set(c["results"]["chat"][side]) == {"burst", "rate"}
        assert c["results"]["targeted"][side]["batch10"]["median"]["exactly_once"]
    assert [f["label"] for f in c["figures"]] == [f[3] for f in FIGURES]
    for f in c["figures"]:
        for side in SIDES:
            st = f[side]
            assert st["n"] == 2 and len(st["values"]) == 2 and st["min"] <= st["median"] <= st["max"], f
        if not f["before"]["median"]:
            # a tiny run can measure 0 (idle memory of 40 connections inside one page of RSS): no ratio, no verdict
            assert (f["ratio"], f["noise"], f["verdict"]) == (None, None, "no verdict (before is 0)"), f
            continue
        assert f["ratio"] == round(f["after"]["median"] / f["before"]["median"], 3), f
        if f["after"]["spread"] is None:  # the after side's median is 0 while its runs differ
            assert (f["noise"], f["verdict"]) == (None, "no verdict (median 0)"), f
            continue
        assert f["noise"] == round(max(f["before"]["spread"], f["after"]["spread"]), 4), f
        assert f["verdict"] == ("within noise" if abs(f["ratio"] - 1) <= f["noise"] else
                                "better" if (f["ratio"] > 1) == f["higher_is_better"] else "worse"), f
    report = (tmp_path / "performance.md").read_text()
    section = report.split("## Before and after (`python -m bench compare`)")[1].split("\n## ")[0]
    assert f"Before: `HEAD` ({head[:12]}); after: this tree ({head[:12]}" in section
    assert "Notes on this comparison: tiny, in the test" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "figure" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == [f[3] for f in FIGURES]
    assert all(r.endswith(f"**{f['verdict']}** |") for r, f in zip(rows, c["figures"]))
    assert "Every run of both sides delivered everything without errors." in section
    assert "Notes on this run: an earlier run, kept" in report  # the report's other parts are still there
    assert "## How to compare two commits" in report and "## Reproduce" in report
    # ``python -m bench report`` renders the comparison again from the JSON alone
    (tmp_path / "performance.md").unlink()
    proc = _bench(["report"], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert section in (tmp_path / "performance.md").read_text()


def test_bench_compare_unknown_ref_is_a_clear_error(tmp_path):
    """An unknown commit stops the comparison before anything runs, with its name in the message."""
    for ref, said in (("no-such-commit-i21", "unknown ref 'no-such-commit-i21'"), ("-x", "not a commit: '-x'"),
                      ("0" * 40, f"unknown ref '{'0' * 40}'")):
        proc = _bench(["compare", f"--ref={ref}", "--tiny"], tmp_path, timeout=60)
        assert proc.returncode == 2 and said in proc.stderr, (ref, proc.stderr)
    assert not (tmp_path / "bench-results.json").exists()
    assert temporary_checkouts(tmp_path) == set()  # nothing checked out
    proc = _bench(["compare", "--tiny"], tmp_path, timeout=60)
    assert proc.returncode == 2 and "compare needs --ref" in proc.stderr, proc.stderr
    proc = _bench(["fanout", "--ref", "HEAD"], tmp_path, timeout=60)
    assert proc.returncode == 2 and "--ref and --size belong to 'compare'" in proc.stderr, proc.stderr


def _git(*args, stdin=None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench test", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench test", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    return subprocess.run(["git", *args], cwd=ROOT, input=stdin, capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def test_bench_compare_ref_that_cannot_serve(tmp_path):
    """A ref whose ``run.py`` refuses the bench's options fails with its server's own words, checkout removed."""
    # A commit of its own (an unreferenced object, whatever the clone's depth): run.py refuses every option.
    blob = _git("hash-object", "-w", "--stdin", stdin='import sys\nsys.exit("run.py: error: unrecognized arguments")\n')
    tree = _git("mktree", stdin=f"100644 blob {blob}\trun.py\n")
    commit = _git("commit-tree", tree, "-m", "a run.py that serves nothing")
    proc = _bench(["compare", "--ref", commit, "--tiny", "--scenarios", "targeted"], tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "python -m bench compare: failed: before exited with 1" in proc.stderr
    assert "run.py: error: unrecognized arguments" in proc.stderr and "must accept the options" in proc.stderr
    assert temporary_checkouts(tmp_path) == set()
    assert not (tmp_path / "bench-results.json").exists()


@pytest.mark.parametrize("size, said", [
    ("idle_ws", "expected name=value"),
    ("idle_wss=10", "unknown size 'idle_wss'"),
    ("idle_ws=ten", "idle_ws takes a whole number"),
    ("idle_ws=2.5", "idle_ws takes a whole number"),
    ("idle_ws=0", "idle_ws must be above 0"),
    ("rate=-1", "rate must be above 0"),
    ("rate=nan", "rate must be above 0"),
])
def test_bench_compare_bad_size(tmp_path, size, said):
    """``--size`` names a field of ``Sizes`` and a value above 0 of its type; anything else is refused."""
    proc = _bench(["compare", "--ref", "HEAD", "--size", size], tmp_path, timeout=60)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert not (tmp_path / "bench-results.json").exists()


def test_bench_compare_sizes_and_scenarios():
    """The smallest accepted sizes (1, 0.001) pass; --scenarios picks known names only."""
    from bench.__main__ import parse
    from bench.compare import COMPARE_SIZES
    args = parse(["compare", "--ref", "HEAD", "--size", "idle_ws=1", "--size", "rate=0.001",
                  "--scenarios", "idle,chat"])
    assert args.sizes.idle_ws == 1 and args.sizes.rate == 0.001 and args.scenario_list == ["idle", "chat"]
    assert args.sizes.idle_sse == COMPARE_SIZES.idle_sse == 2000  # the documented default
    with pytest.raises(SystemExit):
        parse(["compare", "--ref", "HEAD", "--scenarios", "idle,login"])
    with pytest.raises(SystemExit):
        parse(["compare", "--ref", "HEAD", "--runs", "0"])


def test_bench_compare_verdict_at_and_past_the_noise():
    """Within noise up to the larger spread of the two sides, better or worse just past it, by direction."""
    from bench.compare import stats, verdict
    before = stats([90.0, 100.0, 110.0])  # spread 20 / 100 = 0.2
    assert before["spread"] == 0.2 and before["median"] == 100.0
    assert verdict(before, stats([120.0, 120.0, 120.0]), True) == (1.2, 0.2, "within noise")
    assert verdict(before, stats([120.1, 120.1, 120.1]), True) == (1.201, 0.2, "better")
    assert verdict(before, stats([120.1, 120.1, 120.1]), False) == (1.201, 0.2, "worse")
    assert verdict(before, stats([79.9, 79.9, 79.9]), True) == (0.799, 0.2, "worse")
    assert verdict(before, stats([79.9, 79.9, 79.9]), False) == (0.799, 0.2, "better")
    wide = stats([50.0, 130.0, 180.0])  # the after side's spread counts too: 130 / 130 = 1.0
    assert verdict(before, wide, True) == (1.3, 1.0, "within noise")
    assert verdict(stats([100.0]), stats([200.0]), True) == (2.0, None, "no verdict (one run)")
    assert verdict(stats([0.0, 0.0]), stats([1.0, 1.0]), True) == (None, None, "no verdict (before is 0)")


def test_a_new_all_run_keeps_the_sections_measured_by_commands_of_their_own():
    """``all`` replaces the scenario results, never the cluster simulation, the 50,000 connections or comparisons
    (each measured by its own command, minutes long: losing them empties their parts of the report)."""
    from bench.__main__ import OWN_SECTIONS, measurements_of_their_own
    stored = {"cluster": {"configs": []}, "connections": {"held": 50000}, "compare": {"ref": "x"},
              "comparisons": {"a": {}}, "fanout": {"squall": {}}, "idle": {}, "sizes": {"events": 1}, "notes": "old"}
    kept = measurements_of_their_own(stored)
    assert kept == {k: stored[k] for k in ("cluster", "connections", "compare", "comparisons")}
    assert set(OWN_SECTIONS) == set(kept)


def test_the_load_generator_binds_each_source_address_to_its_next_free_port():
    """``bench.loadgen.bind_next_port``: ports in turn per source address, a port in use skipped (never port 0:
    the kernel's search for a free port, SO_REUSEADDR as uvloop sets it, made the generator the limit)."""
    import socket
    from bench import loadgen
    source = "127.0.77.9"
    loadgen._next_port.pop(source, None)
    taken = socket.socket()
    taken.bind((source, loadgen.FIRST_SOURCE_PORT + 1))  # someone else holds the second port
    socks = [socket.socket() for _ in range(3)]
    try:
        ports = [loadgen.bind_next_port(s, source) for s in socks]
        first = loadgen.FIRST_SOURCE_PORT
        assert ports == [first, first + 2, first + 3], ports
        assert [s.getsockname() for s in socks] == [(source, p) for p in ports]
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0 for s in socks)
        loadgen._next_port[source] = 65536  # the address has no port left: a clear error, not port 0
        with socket.socket() as last, pytest.raises(OSError, match="no port of 127.0.77.9 left"):
            loadgen.bind_next_port(last, source)
    finally:
        taken.close()
        for s in socks:
            s.close()
        loadgen._next_port.pop(source, None)


def test_bench_compare_label_limits():
    """``--label``: one line of 1 to 100 characters, and only with ``compare``."""
    from bench.__main__ import MAX_LABEL, parse
    assert MAX_LABEL == 100
    assert parse(["compare", "--ref", "HEAD", "--label", "x" * MAX_LABEL]).label == "x" * MAX_LABEL
    assert parse(["compare", "--ref", "HEAD"]).label is None
    for bad in (["compare", "--ref", "HEAD", "--label", "x" * (MAX_LABEL + 1)],
                ["compare", "--ref", "HEAD", "--label", "two\nlines"], ["compare", "--ref", "HEAD", "--label", " "],
                ["idle", "--label", "Presence"]):
        with pytest.raises(SystemExit):
            parse(bad)


def _comparison(ref: str, kb: float) -> dict:
    figure = {"label": "idle memory, KB per WebSocket", "higher_is_better": False, "ratio": 1.0, "noise": 0.02,
              "verdict": "within noise", "before": {"median": kb, "min": kb, "max": kb},
              "after": {"median": kb, "min": kb, "max": kb}}
    return {"ref": ref, "ref_commit": ref * 5, "head": "f" * 40, "date": "2026-12-04 19:00 UTC", "runs": 3,
            "scenarios": ["idle"], "sizes": {}, "figures": [figure], "checks": {"before": {"idle": True},
                                                                                "after": {"idle": True}}}


def test_bench_labelled_comparisons_are_kept_and_rendered(tmp_path):
    """A labelled comparison is kept beside the unlabelled one and the other labels; the same label replaces it."""
    from bench.__main__ import store_compare
    doc = store_compare({}, _comparison("aaaaaaaa", 9.5))
    store_compare(doc, _comparison("bbbbbbbb", 9.6), "Presence (issue 25)")
    store_compare(doc, _comparison("cccccccc", 9.7), "The Connection core (issue 21)")
    store_compare(doc, _comparison("dddddddd", 9.8), "Presence (issue 25)")  # measured again: replaces
    assert doc["compare"]["ref"] == "aaaaaaaa"
    assert {k: v["ref"] for k, v in doc["comparisons"].items()} == {
        "Presence (issue 25)": "dddddddd", "The Connection core (issue 21)": "cccccccc"}
    (tmp_path / "bench-results.json").write_text(json.dumps(doc))
    proc = _bench(["report"], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "performance.md").read_text()
    section = report.split("## Before and after (`python -m bench compare`)")[1].split("\n## ")[0]
    assert section.index("Before: `aaaaaaaa`") < section.index("### Presence (issue 25)") \
        < section.index("Before: `dddddddd`") < section.index("### The Connection core (issue 21)") \
        < section.index("Before: `cccccccc`")
    assert "bbbbbbbb" not in report and section.count("| idle memory, KB per WebSocket |") == 3


# python -m bench cluster / connections50k (issue 26, items 3 and 4) --------------------------------

def test_bench_cluster_tiny(tmp_path):
    """``cluster --tiny``: N = 1 and 2 separate processes, sharded and broadcast routing, counted per process.

    Counts are asserted, not timings: with sharded routing a process receives only its own users'
    envelopes (none discarded: 8 users with consecutive ids in 16,384 shards share none); with
    broadcast routing each of the 2 processes discards the other's 20 of the 40 notifications.
    """
    proc = subprocess.run([sys.executable, "-m", "bench", "cluster", "--tiny", "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c = json.loads((tmp_path / "bench-results.json").read_text())["cluster"]
    assert [(x["n"], x["routing"]) for x in c["configs"]] == [(1, "sharded"), (1, "broadcast"), (2, "alone"),
                                                              (2, "sharded"), (2, "broadcast")]
    for x in c["configs"]:
        procs, total = (1, 20) if x["routing"] == "alone" else (x["n"], 40)  # alone: what one of 2 holds
        assert x["exactly_once"] and x["received"] == x["notifications"] == total, x
        assert x["publish_errors"] == 0 and x["dropped"] == 0, x
        holders = [p for p in x["processes"] if not p["ingress"]]
        assert len(holders) == procs and [p["users"] for p in holders] == [4 if x["n"] == 2 else 8] * procs
        assert all(p["delivered"] == total // procs for p in holders), holders  # each its own users' events
        assert all(p["cpu_ms"] > 0 and p["cpu_us_per_delivered"] > 0 for p in holders), holders
        sm = x["summary"]
        assert sm["delivered"] == total and sm["cpu_us_per_delivered"] > 0, sm
        if x["routing"] != "broadcast":
            assert all(p["broker_in"] == p["delivered"] and p["discarded"] == 0 for p in holders), holders
        else:  # the old design: every process reads every envelope, discards the others' users'
            assert all(p["broker_in"] == 40 and p["discarded"] == 40 - p["delivered"] for p in holders), holders
    assert c["configs"][3]["summary"]["vs_alone"] > 0 and c["configs"][4]["summary"]["vs_alone"] > 0
    # the host's own rate effect: a trivial reader at each N's per-process rate (200/s and 100/s)
    reader = c["host_wakeup"]["us_per_message"]
    assert set(reader) == {"200.0", "100.0"} and all(v >= 0 for v in reader.values()), reader
    assert len(c["sharded_less_host"]) == 2, c
    broadcast2 = c["configs"][4]["summary"]
    assert broadcast2["discarded"] == 40 and broadcast2["cpu_us_per_discarded"] is not None
    report = (tmp_path / "performance.md").read_text()
    section = report.split("## Cluster simulation (issue 26)")[1].split("\n## ")[0]
    assert "`python -m bench cluster --tiny" in section and "Host: " in section
    main_table = section.split("<details>")[0]  # (the per-process table follows)
    rows = [line for line in main_table.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and "a process of N ÷ one process alone with its load" in section
    assert "The host's own rate effect" in section and "`bench/wakeup.py`" in section


def test_bench_connections_tiny(tmp_path):
    """``connections50k --tiny``: 200 WebSockets over 2 workers and 2 holder processes; one broadcast reaches all."""
    proc = subprocess.run([sys.executable, "-m", "bench", "connections50k", "--tiny", "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "bench-results.json").read_text())["connections"]
    assert r["held"] == r["connections"] == r["broadcast_reached"] == 200, r
    assert r["connect_errors"] == 0 and r["dropped"] == 0 and not r["publish_errors"], r
    assert r["workers"] == 2 and r["holders"] == 2 and r["held_per_holder"] == [100, 100], r
    assert len(set(r["sources"])) == 2  # each holder from its own source address
    # the kernel spread the connections over both workers, each under its cap (and its descriptor limit)
    assert sum(w["descriptors"] for w in r["per_worker"]) >= 200, r["per_worker"]
    assert all(w["descriptors"] < r["worker_connections_cap"] for w in r["per_worker"]), r["per_worker"]
    assert r["rss_after_mb"] > r["rss_before_mb"] > 0 and r["kb_per_connection"] > 0, r
    report = (tmp_path / "performance.md").read_text()
    assert "## 200 connections on one host (issue 26)" in report


def test_bench_connections_refuses_sizes_past_the_descriptor_limit():
    """More connections per worker than a worker may hold (with a tenth of margin), or per holder process
    than its descriptor limit, are refused before anything starts; at the limit they pass."""
    from dataclasses import replace

    from bench.scale import SCALE_TINY, check_connection_sizes
    from tornado_app.httpserver import default_max_connections
    limit = 20000
    cap = default_max_connections(limit)
    fits = int(cap / 1.1)  # per worker, at the margin
    at = replace(SCALE_TINY, connections=fits * 4, connection_workers=4, connection_holders=8)
    assert check_connection_sizes(at, limit) == cap
    with pytest.raises(ValueError, match="need more workers or holders"):
        check_connection_sizes(replace(at, connections=fits * 4 + 1), limit)
    holder_at = replace(SCALE_TINY, connections=(limit - 100) * 2, connection_workers=100, connection_holders=2)
    assert check_connection_sizes(holder_at, limit) == cap
    with pytest.raises(ValueError, match="need more workers or holders"):
        check_connection_sizes(replace(holder_at, connections=(limit - 100) * 2 + 2), limit)


def test_a_scenario_re_run_alone_keeps_the_other_scenarios_runs_and_the_notes():
    """``python -m bench targeted --runs 5`` after an ``all`` of 3 runs: the report says 5 for targeted and 3
    (5 for fan-out) for the rest, and the notes of the run it joins stay unless it brings its own."""
    from bench.__main__ import record_runs
    from bench.report import _runs_line
    doc = {"notes": "the all run"}
    record_runs(doc, ["fanout", "idle", "chat", "targeted", "login", "webhooks"], 3, 5, "the all run", True)
    assert doc["runs_of"] == {"fanout": 5, "idle": 3, "chat": 3, "targeted": 3}
    record_runs(doc, ["targeted"], 5, 5, "", False)
    assert doc["runs_of"] == {"fanout": 5, "idle": 3, "chat": 3, "targeted": 5} and doc["notes"] == "the all run"
    assert _runs_line(doc) == ("- Each figure is the median of its scenario's runs (chat 3, fan-out 5, idle 3, "
                               "targeted 5), runs interleaved between the servers.")
    record_runs(doc, ["targeted"], 5, 5, "a busy host", False)
    assert doc["notes"] == "a busy host"
    assert _runs_line({"runs_of": {"idle": 3}}) == "- Each figure is the median of 3 runs (runs interleaved between the servers)."

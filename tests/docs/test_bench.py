"""The benchmark suite runs end to end in its tiny configuration and reports every field.

No timing is asserted: the point is that ``python -m bench`` never rots. The benchmark runs
Squall on SQLite and on PostgreSQL itself, whatever the suite's database, so the suite's
PostgreSQL run (``TEST_DATABASE_URL``) skips this module: it would repeat the SQLite run's work.
"""
import json
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
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"]
    report = (tmp_path / "performance.md").read_text()
    for heading in ("## Machine", "## Targets (issues 6 and 13)", "## Notification fan-out", "## Idle connections",
                    "## Targeted notifications", "## Chat"):
        assert heading in report
    targets = report.split("## Targets (issues 6 and 13)")[1].split("## Notification fan-out")[0]
    rows = [line.split(" | ") for line in targets.splitlines() if line.startswith("| 6.") or line.startswith("| 13.")]
    assert len(rows) == 26, len(rows)  # the unmeasured python-socketio reference row is gone (issue 20, item 19)
    # the targeted section shows bare Tornado's rows and ratios, and the targets the 1-per-request ceiling
    assert "bare Tornado (stores nothing)" in report and "requests/s, Squall ÷ bare Tornado" in report
    assert "At 1 user per request every notification is one HTTP request." in targets
    for row in rows:  # every target row has a measured value (column 3) and a verdict (column 6)
        assert row[2] != "—" and row[5].strip(" |") in ("**yes**", "**no**"), row


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

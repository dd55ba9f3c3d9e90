"""The benchmark suite runs end to end in its tiny configuration and reports every field.

No timing is asserted: the point is that ``python -m bench`` never rots.
"""
import json
import subprocess
import sys

from tests.procs import ROOT

FANOUT_FIELDS = {"deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
                 "server_cpu_us_per_delivery", "peak_rss_mb", "loadgen_cpu_pct", "deliveries",
                 "expected_deliveries", "complete"}
IDLE_FIELDS = {"ws_kb_per_connection", "sse_kb_per_connection", "ws_connects_per_s", "sse_connects_per_s",
               "concurrent_connections", "broadcast_reached", "connect_errors"}
CHAT_FIELDS = {"messages_per_s", "ack_p50_ms", "ack_p99_ms", "delivery_p50_ms", "delivery_p99_ms",
               "server_cpu_us_per_message", "loadgen_cpu_pct", "acked", "delivered", "errors", "complete"}


def test_bench_tiny_reports_every_field(tmp_path):
    """``python -m bench all --tiny`` runs Squall and the baseline and writes the report and JSON."""
    pg_url = "postgresql://postgres@127.0.0.1:5432/squall_bench_test"
    proc = subprocess.run([sys.executable, "-m", "bench", "all", "--tiny", "--runs", "1", "--no-profile",
                           "--pg-url", pg_url, "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "bench-results.json").read_text())
    for server in ("squall", "baseline"):
        for case in ("ws_burst", "sse_burst", "ws_rate", "sse_rate"):
            med = doc["fanout"][server][case]["median"]
            assert FANOUT_FIELDS <= set(med), (server, case, sorted(med))
            # every notification reached every subscriber (a count, not a timing)
            assert med["complete"] and med["deliveries"] == med["expected_deliveries"], med
        idle = doc["idle"][server]["median"]
        assert IDLE_FIELDS <= set(idle), (server, sorted(idle))
        assert idle["broadcast_reached"] == idle["concurrent_connections"] == 80, idle
        assert idle["connect_errors"] == 0, idle
    for db in ("sqlite", "postgres"):
        for case in ("burst", "rate"):
            med = doc["chat"][db][case]["median"]
            assert CHAT_FIELDS <= set(med), (db, case, sorted(med))
            assert med["complete"] and med["errors"] == 0, med
            assert med["acked"] == med["delivered"] == med["messages"], med
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"]
    report = (tmp_path / "performance.md").read_text()
    for heading in ("## Machine", "## Targets (issue 6)", "## Notification fan-out", "## Idle connections",
                    "## Chat"):
        assert heading in report
    assert "—" not in report.split("## Targets (issue 6)")[1].split("## Notification fan-out")[0], \
        "every target row has a measured value"


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

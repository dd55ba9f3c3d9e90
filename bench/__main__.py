"""``python -m bench {all,fanout,idle,chat,targeted,login}``: run the benchmarks and regenerate docs/performance.md."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

from .loadgen import raise_fd_limit
from .report import machine, render
from .runner import TINY, Sizes, run
from .servers import ROOT

SCENARIOS = ("fanout", "idle", "chat", "targeted", "login")


def parse(argv):
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("scenario", choices=("all",) + SCENARIOS + ("report",), nargs="?", default="all",
                   help="what to run; 'report' only rewrites performance.md from bench-results.json")
    p.add_argument("--tiny", action="store_true", help="a configuration that runs in seconds (for tests)")
    p.add_argument("--runs", type=int, default=None,
                   help="runs per figure, median reported (default 3 and 5 for fan-out; tiny 1); sets both")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile runs")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/squall_bench",
                   help="PostgreSQL database for the chat bench (dropped and re-created)")
    p.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL chat bench")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "docs"),
                   help="where performance.md and bench-results.json go")
    p.add_argument("--notes", default="", help="a sentence printed in the report (e.g. the machine was busy)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run, merge with earlier results of other scenarios, write the JSON and the report."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.scenario == "report":
        return rewrite_report(args.out_dir)
    raise_fd_limit()
    sizes = TINY if args.tiny else Sizes()
    runs = args.runs or (1 if args.tiny else 3)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results = run(scenarios, sizes, runs, not args.no_profile, None if args.no_pg else args.pg_url,
                  log=lambda msg: print(msg, flush=True), fanout_runs=args.runs)
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, "bench-results.json")
    doc = {}
    if args.scenario != "all" and os.path.exists(json_path):
        with open(json_path) as f:
            doc = json.load(f)
        if doc.get("sizes") != results["sizes"]:
            doc = {}  # results of another configuration do not belong in the same table
    profiles = {**doc.get("profiles", {}), **results.pop("profiles", {})}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    measured_at = {k: v for k, v in doc.get("measured_at", {}).items() if k not in scenarios}
    measured_at.update({k: now for k in scenarios})
    doc.update(results)
    doc["measured_at"] = measured_at
    doc["profiles"] = profiles
    doc["machine"] = machine()
    doc["generated_at"] = now
    doc["notes"] = args.notes
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out_dir, "performance.md"), "w") as f:
        f.write(render(doc))
    print(f"wrote {json_path} and performance.md", flush=True)
    return 0


def rewrite_report(out_dir: str) -> int:
    """Regenerate performance.md from the stored results (software versions read again here)."""
    json_path = os.path.join(out_dir, "bench-results.json")
    with open(json_path) as f:
        doc = json.load(f)
    stored = doc.get("machine", {})
    doc["machine"] = {**machine(), **{k: stored[k] for k in ("loadavg_at_end", "argv") if k in stored}}
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(os.path.join(out_dir, "performance.md"), "w") as f:
        f.write(render(doc))
    print(f"rewrote {os.path.join(out_dir, 'performance.md')} from {json_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

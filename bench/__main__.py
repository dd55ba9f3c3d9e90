"""``python -m bench {all,fanout,idle,chat,targeted,login,webhooks,cluster,connections50k,compare,report}``.

Runs the benchmarks. ``cluster`` and ``connections50k`` (issue 26, bench/scale.py) run only
when named: ``all`` leaves them out (they start many processes and take minutes).

The results go into docs/bench-results.json, and docs/performance.md is rendered from it.

``python -m bench compare --ref COMMIT``: the same scenarios on COMMIT (checked out in a
temporary git worktree) and on this tree, runs interleaved; see bench/compare.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import List

from .loadgen import raise_fd_limit
from . import compare as comparison
from .report import machine, render
from .runner import TINY, Sizes, run
from .servers import ROOT

SCENARIOS = ("fanout", "idle", "chat", "targeted", "login", "webhooks")
SCALE_SCENARIOS = ("cluster", "connections50k")  # bench/scale.py; not part of "all"
MAX_LABEL = 100  # characters of a comparison's --label (its heading in the report)


def valid_label(label: str) -> bool:
    """A --label: one line of 1 to MAX_LABEL characters, not only spaces."""
    return 0 < len(label) <= MAX_LABEL and label.strip() != "" and label.isprintable()


# Sections measured by commands of their own (a comparison of two commits, the scale scenarios):
# a new ``all`` run, or one of another configuration, replaces the rest of the results, not these.
OWN_SECTIONS = ("compare", "comparisons", "cluster", "connections")


def measurements_of_their_own(doc: dict) -> dict:
    """What of the stored results ``doc`` stays when ``all`` (or another configuration) replaces them."""
    return {k: v for k, v in doc.items() if k in OWN_SECTIONS}


def store_compare(doc: dict, result: dict, label=None) -> dict:
    """``doc`` (bench-results.json) with ``result`` stored: as ``"compare"``, or under ``"comparisons"``
    by its label (a comparison kept beside the others; the same label replaces it)."""
    if label is None:
        doc["compare"] = result
    else:
        result["label"] = label
        doc.setdefault("comparisons", {})[label] = result
    return doc


def parse(argv):
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("scenario", choices=("all",) + SCENARIOS + SCALE_SCENARIOS + ("compare", "report"), nargs="?", default="all",
                   help="what to run; 'report' only rewrites performance.md from bench-results.json; 'compare' "
                        "measures --ref against this tree")
    p.add_argument("--ref", default=None, help="compare: the commit to measure before this tree (a sha, tag, branch)")
    p.add_argument("--size", action="append", default=[], metavar="NAME=VALUE",
                   help="compare: override one size of the comparison (repeatable), e.g. --size idle_ws=2000")
    p.add_argument("--scenarios", default=",".join(comparison.COMPARE_SCENARIOS),
                   help="compare: which scenarios, comma-separated (default all of fanout,idle,chat,targeted)")
    p.add_argument("--tiny", action="store_true", help="a configuration that runs in seconds (for tests)")
    p.add_argument("--runs", type=int, default=None,
                   help="runs per figure, median reported (default 3 and 5 for fan-out; tiny 1; compare 5 per"
                        " side, tiny 2); sets both")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile runs")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/squall_bench",
                   help="PostgreSQL database for the chat bench (dropped and re-created)")
    p.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL chat bench")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "docs"),
                   help="where performance.md and bench-results.json go")
    p.add_argument("--notes", default="", help="a sentence printed in the report (e.g. the machine was busy)")
    p.add_argument("--label", default=None,
                   help=f"compare: keep this comparison under its own heading (at most {MAX_LABEL} characters, one "
                        "line) beside the others, instead of replacing the unlabelled one; the same label replaces it")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be 1 or more")
    if args.scenario == "compare":
        if not args.ref:
            p.error("compare needs --ref COMMIT (the commit to measure before this tree)")
        try:
            args.sizes = comparison.parse_sizes(TINY if args.tiny else comparison.COMPARE_SIZES, args.size)
        except ValueError as exc:
            p.error(str(exc))
        args.scenario_list = [x.strip() for x in args.scenarios.split(",") if x.strip()]
        unknown = [x for x in args.scenario_list if x not in comparison.COMPARE_SCENARIOS]
        if unknown or not args.scenario_list:
            p.error(f"--scenarios: unknown {', '.join(unknown) or '(none given)'} "
                    f"(choose from {', '.join(comparison.COMPARE_SCENARIOS)})")
        if args.label is not None and not valid_label(args.label):
            p.error(f"--label: one line of 1 to {MAX_LABEL} characters")
    elif args.ref or args.size:
        p.error("--ref and --size belong to 'compare'")
    elif args.label is not None:
        p.error("--label belongs to 'compare'")
    return args


def record_runs(doc: dict, scenarios: List[str], runs: int, fanout_runs: int, notes: str, whole: bool) -> None:
    """Runs per scenario into ``doc["runs_of"]`` (a scenario re-run alone with --runs keeps the others'
    counts; login and webhooks are one run each) and the notes (a scenario re-run alone without
    --notes keeps those of the run it joins)."""
    runs_of = {k: v for k, v in doc.get("runs_of", {}).items() if k not in scenarios}
    runs_of.update({k: fanout_runs if k == "fanout" else runs for k in scenarios
                    if k in ("fanout", "idle", "chat", "targeted")})
    doc["runs_of"] = runs_of
    if notes or whole:
        doc["notes"] = notes


def main(argv=None) -> int:
    """Run, merge with earlier results of other scenarios, write the JSON and the report."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.scenario == "report":
        return rewrite_report(args.out_dir)
    raise_fd_limit()
    if args.scenario == "compare":
        return run_compare(args)
    if args.scenario in SCALE_SCENARIOS:
        return run_scale_scenario(args)
    sizes = TINY if args.tiny else Sizes()
    runs = args.runs or (1 if args.tiny else 3)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results = run(scenarios, sizes, runs, not args.no_profile, None if args.no_pg else args.pg_url,
                  log=lambda msg: print(msg, flush=True), fanout_runs=args.runs)
    if "webhooks" in results and args.notes:
        results["webhooks"]["notes"] = args.notes  # kept with its section: a later run's notes replace the top one
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, "bench-results.json")
    doc = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            doc = json.load(f)
        if args.scenario == "all" or doc.get("sizes") != results["sizes"]:
            doc = measurements_of_their_own(doc)
    profiles = {**doc.get("profiles", {}), **results.pop("profiles", {})}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    measured_at = {k: v for k, v in doc.get("measured_at", {}).items() if k not in scenarios}
    measured_at.update({k: now for k in scenarios})
    doc.update(results)
    doc["measured_at"] = measured_at
    doc["profiles"] = profiles
    doc["machine"] = machine()
    doc["generated_at"] = now
    record_runs(doc, scenarios, runs, args.runs or sizes.fanout_runs, args.notes, args.scenario == "all")
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out_dir, "performance.md"), "w") as f:
        f.write(render(doc))
    print(f"wrote {json_path} and performance.md", flush=True)
    return 0


def run_scale_scenario(args) -> int:
    """``cluster`` or ``connections50k``: its section replaces the stored one; the rest of the results stay."""
    from .scale import SCALE_TINY, ScaleSizes, run_scale
    sizes = SCALE_TINY if args.tiny else ScaleSizes()
    section = run_scale(args.scenario, sizes, args.runs or 1, None if args.no_pg else args.pg_url,
                        log=lambda msg: print(msg, flush=True))
    name = next(iter(section))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section[name].update({"machine": machine(), "measured_at": now, "notes": args.notes})
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, "bench-results.json")
    doc = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            doc = json.load(f)
    doc.update(section)
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out_dir, "performance.md"), "w") as f:
        f.write(render(doc))
    print(f"wrote {name} into {json_path} and performance.md", flush=True)
    return 0


def run_compare(args) -> int:
    """``compare``: measure --ref and this tree, store the result under "compare", re-render the report."""
    try:
        result = comparison.compare(args.ref, args.sizes, args.runs or (2 if args.tiny else comparison.COMPARE_RUNS),
                                    args.scenario_list, log=lambda msg: print(msg, flush=True))
    except comparison.CompareError as exc:
        print(f"python -m bench compare: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as exc:  # a server that would not start (an old ref refusing an option) or a failed run
        print(f"python -m bench compare: failed: {exc}\n(the server of --ref must accept the options "
              "bench/servers.py passes to run.py)", file=sys.stderr, flush=True)
        return 1
    result["machine"] = machine()
    result["notes"] = args.notes
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, "bench-results.json")
    doc = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            doc = json.load(f)
    store_compare(doc, result, args.label)
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out_dir, "performance.md"), "w") as f:
        f.write(render(doc))
    for row in result["figures"]:
        print(f"  {row['label']}: before {row['before']['median']}, after {row['after']['median']}, "
              f"ratio {row['ratio']}, {row['verdict']}", flush=True)
    print(f"wrote the comparison into {json_path} and performance.md", flush=True)
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

"""``python -m bench compare --ref COMMIT``: the same scenarios on two commits, runs interleaved.

The other commit is checked out into a temporary ``git worktree`` (removed afterwards) and
served by its own ``run.py``, with the same interpreter, options and load generator as the
current tree. Each scenario runs the measuring code of ``bench/runner.py`` on both servers,
run by run (before, after, before, after …), so a busy moment of the machine weighs on both.

Noise, per figure: the spread of one side's runs relative to its median, ``(max − min) /
median``, the larger of the two sides. The difference is *within noise* when
``|after ÷ before − 1|`` is no larger than that: the medians differ by less than runs of the
same code differ from one another. Fewer than two runs per side give no verdict.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shutil
import statistics
import subprocess
import tempfile
from typing import Dict, Iterator, List, Optional, Tuple

from .runner import Bench, Sizes
from .servers import ROOT, Server

COMPARE_SCENARIOS = ("fanout", "idle", "chat", "targeted")
SIDES = ("before", "after")

# Default sizes of a comparison: the full configuration's fan-out and chat, fewer idle
# connections (2,000 + 2,000, each a different user) and targeted users, five runs per side.
# Estimated from the full bench's timings on this 2-core machine (docs/performance.md): per run
# and side about 21 s of fan-out, 11 s idle, 12 s chat, 4 s targeted, so 5 × 2 × 48 s plus
# about 50 s of start-up and registration, 8 to 9 minutes when the machine is otherwise quiet.
COMPARE_SIZES = Sizes(idle_ws=2000, idle_sse=2000, targeted_users=2000, targeted_notifications=10000)
COMPARE_RUNS = 5
TARGETED_BATCH = 10  # users per publish request in the comparison's one targeted case

# (scenario, case or "" for idle, figure key, label, True when higher is better)
FIGURES: List[Tuple[str, str, str, str, bool]] = [
    ("fanout", "ws_burst", "deliveries_per_s", "WS fan-out, deliveries/s (as fast as accepted)", True),
    ("fanout", "sse_burst", "deliveries_per_s", "SSE fan-out, deliveries/s (as fast as accepted)", True),
    ("fanout", "ws_burst", "server_cpu_us_per_delivery", "WS fan-out, server CPU µs/delivery", False),
    ("fanout", "sse_burst", "server_cpu_us_per_delivery", "SSE fan-out, server CPU µs/delivery", False),
    ("fanout", "ws_rate", "latency_p99_ms", "WS fan-out, p99 ms at the steady rate", False),
    ("fanout", "sse_rate", "latency_p99_ms", "SSE fan-out, p99 ms at the steady rate", False),
    ("idle", "", "ws_kb_per_connection", "idle memory, KB per WebSocket", False),
    ("idle", "", "sse_kb_per_connection", "idle memory, KB per SSE stream", False),
    ("idle", "", "ws_connects_per_s", "WebSocket connects/s", True),
    ("idle", "", "sse_connects_per_s", "SSE connects/s", True),
    ("chat", "burst", "messages_per_s", "chat on SQLite, messages/s (as fast as accepted)", True),
    ("chat", "burst", "ack_p99_ms", "chat on SQLite, ack p99 ms (as fast as accepted)", False),
    ("chat", "rate", "delivery_p99_ms", "chat on SQLite, delivery p99 ms at the steady rate", False),
    ("targeted", f"batch{TARGETED_BATCH}", "notifications_per_s",
     f"targeted notifications/s ({TARGETED_BATCH} users per request, SQLite)", True),
]


class CompareError(Exception):
    """A comparison that cannot start (unknown commit, not a git checkout)."""


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise CompareError(f"git {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout.strip()


def resolve(ref: str) -> str:
    """The full commit id ``ref`` names in this repository, or CompareError."""
    if not ref or ref.startswith("-") or any(c.isspace() or c == "\0" for c in ref):
        raise CompareError(f"not a commit: {ref!r}")
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise CompareError(f"unknown ref {ref!r}: no such commit in {ROOT}")
    return proc.stdout.strip()


def head() -> dict:
    """The current tree: its commit and whether it has uncommitted changes (which are measured too)."""
    return {"commit": _git("rev-parse", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}


@contextlib.contextmanager
def checkout(sha: str) -> Iterator[str]:
    """``sha`` checked out in a temporary git worktree, removed on the way out."""
    tmp = tempfile.mkdtemp(prefix="squall-compare-")
    path = os.path.join(tmp, "tree")
    _git("worktree", "add", "--detach", "--quiet", path, sha)
    try:
        yield path
    finally:
        try:
            _git("worktree", "remove", "--force", path)
        except CompareError:
            shutil.rmtree(path, ignore_errors=True)
            _git("worktree", "prune")
        shutil.rmtree(tmp, ignore_errors=True)


def parse_sizes(base: Sizes, items: List[str]) -> Sizes:
    """``base`` with each ``name=value`` applied; ValueError names the bad one."""
    fields = {f.name: f for f in dataclasses.fields(Sizes)}
    changes: Dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--size {item!r}: expected name=value (e.g. idle_ws=2000)")
        if name not in fields:
            raise ValueError(f"--size {item!r}: unknown size {name!r} (known: {', '.join(sorted(fields))})")
        kind = type(getattr(base, name))
        try:
            value = kind(text) if kind is float else int(text.strip())
        except ValueError:
            raise ValueError(f"--size {item!r}: {name} takes {'a number' if kind is float else 'a whole number'}")
        if not value > 0 or value != value or value == float("inf"):
            raise ValueError(f"--size {item!r}: {name} must be above 0")
        changes[name] = value
    return dataclasses.replace(base, **changes)


def _start_pair(bench: Bench, phase: str, trees: Dict[str, str], n_users: int, started: List[Server]) -> List[Server]:
    """One fresh Squall per side on its own SQLite database, each with ``n_users`` users."""
    pair = []
    for side in SIDES:
        db = f"sqlite:///{os.path.join(bench.work, f'{side}-{phase}.db')}"
        server = bench.start_squall(side, db, n_users, root=trees[side])
        started.append(server)
        pair.append(server)
    return pair


def measure(trees: Dict[str, str], sizes: Sizes, runs: int, scenarios: List[str], log=print) -> dict:
    """Every chosen scenario on both trees, runs interleaved; ``{scenario: {side: results}}``."""
    bench = Bench(sizes, runs, profile=False, log=log, fanout_runs=runs)
    started: List[Server] = []
    results: dict = {}
    try:
        if "fanout" in scenarios or "idle" in scenarios:
            n = max(sizes.subscribers, sizes.idle_ws + sizes.idle_sse) if "idle" in scenarios else sizes.subscribers
            pair = _start_pair(bench, "streams", trees, n, started)
            if "fanout" in scenarios:
                log("fan-out, before and after")
                results["fanout"] = bench.fanout(pair)
            if "idle" in scenarios:
                log("idle connections, before and after")
                results["idle"] = bench.idle(pair)
            for server in pair:
                server.stop()
        if "chat" in scenarios:
            log("chat on SQLite, before and after")
            pair = _start_pair(bench, "chat", trees, 2 * sizes.chat_pairs, started)
            results["chat"] = bench.chat_interleaved([(server, server.name) for server in pair])
            for server in pair:
                server.stop()
        if "targeted" in scenarios:
            log("targeted notifications on SQLite, before and after")
            before, after = _start_pair(bench, "targeted", trees, sizes.targeted_users, started)
            own, other = bench.targeted(before, "before", batches=(TARGETED_BATCH,), steady=False,
                                        baseline=after, baseline_name="after")
            results["targeted"] = {"before": own, "after": other}
        return results
    finally:
        for server in started:
            server.stop()
        bench.close()


def _side(results: dict, scenario: str, side: str, case: str) -> Optional[List[dict]]:
    by_side = results.get(scenario, {}).get(side)
    if by_side is None:
        return None
    entry = by_side if not case else by_side.get(case)
    return entry.get("runs") if entry else None


def stats(values: List[float]) -> dict:
    """Median, lowest, highest, relative spread ``(max − min) / median`` (None below two runs)."""
    med = statistics.median(values)
    width = max(values) - min(values)
    rel = None if len(values) < 2 else 0.0 if width == 0 else width / abs(med) if med else None
    return {"median": round(med, 3), "min": min(values), "max": max(values), "values": values, "n": len(values),
            "spread": None if rel is None else round(rel, 4)}


def verdict(before: dict, after: dict, higher_is_better: bool) -> Tuple[Optional[float], Optional[float], str]:
    """``(after ÷ before, noise, verdict)``: "within noise", "better", "worse" or "no verdict (…)"."""
    if not before["median"]:
        return None, None, "no verdict (before is 0)"
    r = round(after["median"] / before["median"], 3)
    if min(before["n"], after["n"]) < 2:
        return r, None, "no verdict (one run)"
    if before["spread"] is None or after["spread"] is None:
        return r, None, "no verdict (median 0)"
    noise = round(max(before["spread"], after["spread"]), 4)
    if abs(r - 1) <= noise:
        return r, noise, "within noise"
    return r, noise, "better" if (r > 1) == higher_is_better else "worse"


def checks(results: dict) -> Dict[str, Dict[str, bool]]:
    """Per side and scenario: did every run deliver everything, without errors?"""
    out: Dict[str, Dict[str, bool]] = {side: {} for side in SIDES}
    for side in SIDES:
        for case, runs in results.get("fanout", {}).get(side, {}).items():
            out[side]["fanout"] = out[side].get("fanout", True) and all(r["complete"] for r in runs["runs"])
        if "idle" in results:
            out[side]["idle"] = all(r["connect_errors"] == 0 and r["broadcast_reached"] == r["concurrent_connections"]
                                    for r in results["idle"][side]["runs"])
        for case, runs in results.get("chat", {}).get(side, {}).items():
            out[side]["chat"] = out[side].get("chat", True) and all(
                r["complete"] and r["errors"] == 0 for r in runs["runs"])
        for case, runs in results.get("targeted", {}).get(side, {}).items():
            out[side]["targeted"] = out[side].get("targeted", True) and all(r["exactly_once"] for r in runs["runs"])
    return out


def figures(results: dict) -> List[dict]:
    """One row per figure measured on both sides: both sides' statistics, the ratio and the verdict."""
    rows = []
    for scenario, case, key, label, higher in FIGURES:
        sides = {side: _side(results, scenario, side, case) for side in SIDES}
        if not all(sides.values()):
            continue
        values = {side: [r[key] for r in runs if isinstance(r.get(key), (int, float))] for side, runs in sides.items()}
        if not all(values.values()):
            continue
        before, after = stats(values["before"]), stats(values["after"])
        r, noise, word = verdict(before, after, higher)
        rows.append({"scenario": scenario, "case": case, "key": key, "label": label, "higher_is_better": higher,
                     "before": before, "after": after, "ratio": r, "noise": noise, "verdict": word})
    return rows


def compare(ref: str, sizes: Sizes, runs: int, scenarios: List[str], log=print) -> dict:
    """Check ``ref`` out, measure both trees, and return the ``"compare"`` document (machine added by the caller)."""
    sha = resolve(ref)
    current = head()
    log(f"before: {ref} ({sha[:12]}); after: this tree ({current['commit'][:12]}"
        f"{', with uncommitted changes' if current['dirty'] else ''})")
    with checkout(sha) as tree:
        results = measure({"before": tree, "after": ROOT}, sizes, runs, scenarios, log)
    return {"ref": ref, "ref_commit": sha, "head": current["commit"], "head_dirty": current["dirty"],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "runs": runs, "scenarios": scenarios, "sizes": dataclasses.asdict(sizes),
            "figures": figures(results), "checks": checks(results), "results": results}

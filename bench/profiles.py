"""Summaries of py-spy's raw (collapsed stack) profiles: where the server's time goes."""
from __future__ import annotations

import re
from collections import Counter

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``function (file.py)`` with the path cut to its last two parts and no line number."""
    m = FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip()
    parts = m.group("file").replace("\\", "/").split("/")
    where = "/".join(parts[-2:])
    if "site-packages" in parts:
        where = "/".join(parts[parts.index("site-packages") + 1:])
    return f"{m.group('func')} ({where})"


# Leaf frames of a thread that waits (py-spy does not always recognise these as idle).
WAITING = ("_worker (futures/thread.py)", "EpollSelector.select (selectors.py)", "Condition.wait (threading.py)",
           "Event.wait (threading.py)", "Thread.join (threading.py)")


def summarise(raw: str, top: int = 12) -> dict:
    """Samples, the share spent waiting, and the top busy functions by own and inclusive time and by area.

    Percentages are of the busy samples (a thread waiting for work or for the network is
    counted apart, in ``waiting_pct``).
    """
    own, inclusive, areas = Counter(), Counter(), Counter()
    total = waiting = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if frames[-1] in WAITING:
            waiting += n
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
        areas[area(frames[-1])] += n

    def table(counter):
        return [{"function": f, "pct": round(100.0 * c / total, 1)} for f, c in counter.most_common(top)]

    return {"samples": total + waiting, "busy_samples": total,
            "waiting_pct": round(100.0 * waiting / max(total + waiting, 1), 1), "own": table(own) if total else [], "inclusive": table(inclusive) if total else [],
            "areas": table(areas) if total else []}


def area(frame: str) -> str:
    """A coarse bucket for a leaf frame: which library or part of Squall spends the time."""
    m = re.search(r"\(([^)]*)\)$", frame)
    where = m.group(1) if m else frame
    for key, name in (("tornado/", "tornado"), ("asyncio/", "asyncio"), ("peewee", "peewee"),
                      ("sqlite", "sqlite"), ("psycopg", "psycopg2"), ("json/", "json"), ("jwt/", "pyjwt"),
                      ("handlers/", "squall handlers"), ("services/", "squall services"),
                      ("models/", "squall models"), ("threading", "threads"), ("concurrent/", "threads"),
                      ("selectors", "event loop poll")):
        if key in where:
            return name
    return where

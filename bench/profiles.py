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


def summarise(raw: str, top: int = 12) -> dict:
    """Total samples, the top functions by own time and by inclusive time, and by area."""
    own, inclusive, areas = Counter(), Counter(), Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
        areas[area(frames[-1])] += n

    def table(counter):
        return [{"function": f, "pct": round(100.0 * c / total, 1)} for f, c in counter.most_common(top)]

    return {"samples": total, "own": table(own) if total else [], "inclusive": table(inclusive) if total else [],
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

"""CPU time and memory of a process, read from ``/proc`` (Linux)."""
from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    t = os.times()
    return t.user + t.system


class ProcStat:
    """Reads ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` of one process."""

    def __init__(self, pid: int):
        self.pid = pid

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far (clock-tick resolution)."""
        with open(f"/proc/{self.pid}/stat") as f:
            # The command name may hold spaces: fields are counted after its closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory(self) -> dict:
        """``rss_kb``, ``peak_kb`` (VmHWM) and the same in MB, rounded."""
        values = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    values[name] = int(value.split()[0])
        rss, peak = values.get("VmRSS", 0), values.get("VmHWM", 0)
        return {"rss_kb": rss, "peak_kb": peak, "rss_mb": round(rss / 1024, 1), "peak_mb": round(peak / 1024, 1)}

    def cpu_ns(self) -> int:
        """CPU nanoseconds of every live thread of the process (``/proc/<pid>/task/*/schedstat``).

        Nanosecond resolution, where ``cpu_seconds`` counts 10 ms clock ticks: a window of a
        few tens of milliseconds of CPU is measured to well under 1%. A thread that ended is
        no longer counted (Squall's threads live as long as the process).
        """
        total = 0
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # the thread ended meanwhile
        return total

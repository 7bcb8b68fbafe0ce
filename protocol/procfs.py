"""What Linux's /proc says about processes, read in one place: the lab's process tree (clean stops), a ClientApp's
own start-up time and a benchmark's memory. Standard library only (the thin ClientApp imports it). Every reader
returns an empty or neutral value for a process that is gone, or where there is no /proc.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")


class ProcStat(NamedTuple):
    pid: int
    state: str
    ppid: int
    start_ticks: int
    rss_pages: int


def stat(pid: int | str) -> ProcStat | None:
    """Fields of /proc/<pid>/stat (the command name, which may hold spaces and parentheses, is skipped)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return ProcStat(int(pid) if pid != "self" else os.getpid(), fields[0], int(fields[1]), int(fields[19]),
                        int(fields[21]))
    except (OSError, IndexError, ValueError):
        return None


def all_stats() -> list[ProcStat]:
    return [s for entry in PROC.glob("[0-9]*") if (s := stat(entry.name)) is not None]


def descendants(pid: int, stats: list[ProcStat] | None = None) -> list[int]:
    """Every live process started, directly or not, by `pid`."""
    children: dict[int, list[int]] = {}
    for s in stats if stats is not None else all_stats():
        children.setdefault(s.ppid, []).append(s.pid)
    found, frontier = [], [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def is_alive(pid: int) -> bool:
    s = stat(pid)
    return s is not None and s.state != "Z"


def command_line(pid: int) -> bytes:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    stats = all_stats()
    pages = {s.pid: s.rss_pages for s in stats}
    return sum(pages.get(pid, 0) for pid in [root_pid, *descendants(root_pid, stats)]) * os.sysconf("SC_PAGE_SIZE")


def seconds_since_start(pid: int | str = "self") -> float:
    """How long a process has lived (NaN where /proc cannot say)."""
    s = stat(pid)
    try:
        boot = next(float(line.split()[1]) for line in (PROC / "stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration, ValueError):
        return float("nan")
    return float("nan") if s is None else time.time() - (boot + s.start_ticks / os.sysconf("SC_CLK_TCK"))

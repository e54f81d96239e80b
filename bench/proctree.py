"""CPU and memory of a process and all its descendants, read from /proc.

maild may run child processes (a parse pool, an outbox process), and a figure for its main
process alone would hide them. The tree is found through /proc/<pid>/task/*/children (each
thread lists the children it started), recursively. CPU adds cutime/cstime, the time of
children that exited and were reaped inside the tree; a child that is orphaned and reaped by
init is lost. Memory is a sum over the tree: for the peak, the sum of each process's VmHWM,
an upper bound (the peaks need not coincide, and pages shared after fork count in each).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """`pid` and its living descendants; empty if `pid` is gone."""
    if not Path(f"/proc/{pid}").exists():
        return []
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass  # the thread or the process ended meanwhile
    return out


def process_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of one process (its own and its reaped children's), 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the whole tree so far, including children that exited and were reaped in it."""
    return sum(process_cpu_seconds(p) for p in tree_pids(pid))


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KB; (0, 0) if it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break  # VmRSS follows VmHWM
    except OSError:
        pass
    return rss, hwm


class TreeWatch:
    """Reads a tree's memory every `interval` seconds in a thread: a child that exits between two
    reads still counts with the VmHWM last seen, and the largest RSS sum seen is kept (a lower
    bound of the true peak, next to the VmHWM sum, an upper one)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.hwm_kb: dict[int, int] = {}  # every pid seen: its largest VmHWM
        self.max_rss_kb = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> int:
        """Reads the tree once; returns its RSS sum in KB."""
        total = 0
        with self._lock:
            for p in tree_pids(self.pid):
                rss, hwm = memory_kb(p)
                if hwm:
                    self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), hwm)
                total += rss
            self.max_rss_kb = max(self.max_rss_kb, total)
        return total

    def rss_mb(self) -> float:
        """The tree's resident set now."""
        return self.poll() / 1024

    def peak_mb(self) -> float:
        """Sum over every process seen of its VmHWM: an upper bound of the tree's peak."""
        self.poll()
        return sum(self.hwm_kb.values()) / 1024

    def sampled_peak_mb(self) -> float:
        """The largest RSS sum read: a lower bound of the tree's peak."""
        return self.max_rss_kb / 1024

    @property
    def processes(self) -> int:
        return len(self.hwm_kb)

    def start(self) -> TreeWatch:
        self._thread = threading.Thread(target=self._run, name=f"treewatch-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

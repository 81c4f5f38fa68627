"""Watches the machine during a run: how many cores processes outside the benchmark kept busy, per phase.

On a shared 2-core machine other work skews both sides (the 2-thread baseline most), so every
section reports this next to its figures instead of pretending the machine was idle.
"""
import threading
import time
from contextlib import contextmanager

import psutil

INTERVAL_S = 0.5
QUIET_CORES = 0.15  # below this the benchmark effectively had the machine to itself


def busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class Monitor:
    """Samples machine-wide busy CPU time minus this process tree's (the bench, its nodes, its workers)."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []  # (monotonic time, foreign cores over the last interval)
        self.phases: dict[str, tuple[float, float]] = {}
        self._ours: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="noise-monitor", daemon=True)

    def start(self) -> "Monitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _our_delta(self) -> float:
        """CPU seconds our process tree used since the last call (a process that ended loses its last slice)."""
        me = psutil.Process()
        now = {}
        for p in [me] + me.children(recursive=True):
            try:
                t = p.cpu_times()
                now[p.pid] = t.user + t.system
            except psutil.Error:
                continue
        delta = sum(v - self._ours.get(pid, 0.0) for pid, v in now.items())
        self._ours = now
        return delta

    def _run(self) -> None:
        last_t, last_busy = time.monotonic(), busy_seconds()
        self._our_delta()
        while not self._stop.wait(INTERVAL_S):
            t, busy = time.monotonic(), busy_seconds()
            foreign = max(0.0, (busy - last_busy) - self._our_delta()) / (t - last_t)
            self.samples.append((t, foreign))
            last_t, last_busy = t, busy

    @contextmanager
    def phase(self, name: str):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = (t0, time.monotonic())

    def summary(self) -> dict[str, dict]:
        """{phase: {mean, max}} of the cores other processes kept busy during it."""
        out = {}
        for name, (t0, t1) in self.phases.items():
            xs = [f for t, f in self.samples if t0 <= t <= t1]
            out[name] = {"mean": sum(xs) / len(xs) if xs else 0.0, "max": max(xs, default=0.0)}
        return out

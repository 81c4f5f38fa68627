"""`python -m launcher` (what `make run` runs): starts the broker, node2 and node1, each behind its nginx,
and supervises them as a container restart policy would: a process that dies is restarted after a
backoff, up to MAX_RESTARTS within RESTART_WINDOW_S; one that refuses its configuration (exit 4,
gunicorn's "App failed to load") is not, since a restart cannot fix it. Only Ctrl-C or SIGTERM stops
all three: node1, then node2, then the broker, each finishing its requests in flight first.
"""
import signal
import sys
import time

from launcher.stack import Stack

MAX_RESTARTS, RESTART_WINDOW_S = 5, 300.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)
CONFIG_REFUSED = 4
POLL_S = 0.5  # how soon a death, a due restart or Ctrl-C is acted on


class Supervisor:
    """Restarts dead processes. It never sleeps: a restart waits out its backoff as a due time checked
    on later calls, so Ctrl-C during a backoff stops everything at once."""

    def __init__(self, stack: Stack, clock=time.monotonic):
        self.stack, self.clock = stack, clock
        self.restarts: dict[str, list[float]] = {}
        self.due: dict[str, float] = {}  # role -> when its pending restart may run

    def check(self) -> bool:
        """Restarts what is due and schedules what died; -> False when one cannot be (refused config, or too many)."""
        for role in list(self.stack.procs):
            if role in self.due:
                if self.clock() >= self.due[role]:
                    del self.due[role]
                    self.stack.start(role)
                continue
            dead = self.stack.exited(role)
            if dead is not None and not self._schedule(role, *dead):
                return False
        return True

    def _schedule(self, role: str, what: str, code: int) -> bool:
        if code == CONFIG_REFUSED:
            print(f"{what} refused its configuration (see above); stopping", flush=True)
            return False
        recent = [t for t in self.restarts.get(role, []) if self.clock() - t < RESTART_WINDOW_S]
        if len(recent) >= MAX_RESTARTS:
            print(f"{what} exited (code {code}) {len(recent)} times in {RESTART_WINDOW_S:.0f} s; stopping", flush=True)
            return False
        delay = BACKOFF_S[min(len(recent), len(BACKOFF_S) - 1)]
        print(f"{what} exited with code {code}; restarting in {delay:.0f} s "
              f"(restart {len(recent) + 1} of {MAX_RESTARTS} allowed in {RESTART_WINDOW_S:.0f} s)", flush=True)
        self.restarts[role] = [*recent, self.clock()]
        self.due[role] = self.clock() + delay
        return True


def main() -> int:
    stack = Stack()
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    supervisor, healthy = Supervisor(stack), True
    try:
        stack.start("broker")
        print(f"key broker starting on {stack.url('broker')}", flush=True)
        stack.wait_healthy("broker")
        stack.start("node2")
        print(f"node2 starting on {stack.url('node2')}", flush=True)
        stack.start("node1")
        print(f"node1 starting on {stack.url('node1')} (web page and POST /generate); Ctrl-C stops all three", flush=True)
        while not stopping and healthy:
            time.sleep(POLL_S)
            healthy = stopping or supervisor.check()
    finally:
        print(f"stopping: node1, node2, then the broker; generations in flight have {stack.deadline_s:.0f} s "
              "to finish", flush=True)
        stack.stop()
        print("stopped", flush=True)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

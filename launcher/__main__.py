"""`python -m launcher` (what `make run` runs): starts the broker, node2 and node1 in the foreground and
supervises them as a container restart policy would: a process that dies is restarted with backoff,
up to MAX_RESTARTS within RESTART_WINDOW_S; one that refuses its configuration (exit 4, gunicorn's
"App failed to load") is not, since a restart cannot fix it. Only Ctrl-C or SIGTERM stops all three.
"""
import signal
import sys
import time

from launcher.stack import Stack

MAX_RESTARTS, RESTART_WINDOW_S = 5, 300.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)
CONFIG_REFUSED = 4


class Supervisor:
    def __init__(self, stack: Stack, clock=time.monotonic, sleep=time.sleep):
        self.stack, self.clock, self.sleep = stack, clock, sleep
        self.restarts: dict[str, list[float]] = {}

    def check(self) -> bool:
        """Restarts any process that exited; -> False when one cannot be (refused config, or too many)."""
        for role, proc in list(self.stack.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            if code == CONFIG_REFUSED:
                print(f"{role} refused its configuration (see above); stopping", flush=True)
                return False
            recent = [t for t in self.restarts.get(role, []) if self.clock() - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                print(f"{role} exited (code {code}) {len(recent)} times in {RESTART_WINDOW_S:.0f} s; stopping", flush=True)
                return False
            delay = BACKOFF_S[min(len(recent), len(BACKOFF_S) - 1)]
            print(f"{role} exited with code {code}; restarting in {delay:.0f} s "
                  f"(restart {len(recent) + 1} of {MAX_RESTARTS} allowed in {RESTART_WINDOW_S:.0f} s)", flush=True)
            self.sleep(delay)
            self.restarts[role] = [*recent, self.clock()]
            self.stack.start(role)
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
            time.sleep(0.5)
            healthy = stopping or supervisor.check()
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m launcher` (what `make run` runs): starts the broker, node2 and node1 in the foreground;
Ctrl-C stops all three."""
import signal
import time

from launcher.stack import Stack


def main() -> None:
    stack = Stack()
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start("broker")
        print(f"key broker starting on {stack.url('broker')}", flush=True)
        stack.wait_healthy("broker")
        stack.start("node2")
        print(f"node2 starting on {stack.url('node2')}", flush=True)
        stack.start("node1")
        print(f"node1 starting on {stack.url('node1')} (web page and POST /generate); Ctrl-C stops all three", flush=True)
        while not stopping and all(p.poll() is None for p in stack.procs.values()):
            time.sleep(0.5)
    finally:
        stack.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    main()

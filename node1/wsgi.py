"""node1's entry point for gunicorn: `gunicorn 'node1.wsgi:app_from_env()'`; reads the environment once,
and owns how the worker stops: generations in flight finish or end cleanly, and close on node2."""
import atexit
import logging
import os
import signal
import threading
import time

from attestation.hardening import harden_process
from attestation.service import config_or_exit
from node1.app import create_app
from node1.config import Node1Config
from node1.scheduler import GenerationFailed
from shared.memory import return_freed_memory

log = logging.getLogger("twintee.node1")
SHUTTING_DOWN = "node1 is shutting down"
CLOSE_WAIT_S = 5.0  # for the scheduler to send node2 the close frames of the last sessions


def app_from_env():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    harden_process()  # before any key, weight or prompt is in this process's memory
    return_freed_memory()  # before request threads allocate
    config = config_or_exit(Node1Config.from_env, os.environ)
    app = create_app(config)
    drain_on_sigterm(app.extensions["twintee"], config.shutdown_deadline_s)
    return app


def drain_on_sigterm(rt, deadline_s: float) -> None:
    """On gunicorn's graceful stop (SIGTERM; it runs here, in the worker's main thread), generations in
    flight may go on for deadline_s; then each still running ends with a clean error, an error event on
    a stream, 502 otherwise. Without it a long stream outlived gunicorn's graceful timeout and the
    worker was SIGKILLed mid-stream, leaving its sessions on node2 until their idle timeout."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        timer = threading.Timer(deadline_s, end_in_flight, args=(rt,))
        timer.daemon = True
        timer.start()
        if callable(previous):
            previous(signum, frame)  # gunicorn's: stop accepting, wait for requests in flight

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it: never interrupt a request's I/O
    atexit.register(wait_for_closes, rt, CLOSE_WAIT_S)


def end_in_flight(rt) -> None:
    ended = sum(slot.end_all(GenerationFailed(SHUTTING_DOWN)) for slot in rt.slots)
    log.info("shutdown deadline passed: %d generations ended", ended)


def wait_for_closes(rt, timeout: float) -> None:
    """At the worker's exit: until every slot is idle and has sent its close frames (the scheduler's
    thread is a daemon, and would die with them unsent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(slot.idle for slot in rt.slots):
            return
        time.sleep(0.05)
    log.warning("exiting with sessions not yet closed on node2")

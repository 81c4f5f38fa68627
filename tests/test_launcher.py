"""launcher/__main__.py's supervision: restart with backoff and a cap; never restart a refused config;
never sleep (Ctrl-C during a backoff must stop everything at once)."""
from launcher.__main__ import BACKOFF_S, CONFIG_REFUSED, MAX_RESTARTS, Supervisor


class FakeStack:
    """One role whose process dies with `code` as soon as it is (re)started."""

    def __init__(self, code, what="node2"):
        self.procs, self.started, self.code, self.what = {"node2": object()}, [], code, what

    def exited(self, role):
        return (self.what, self.code) if self.code is not None else None

    def start(self, role):
        self.started.append(role)


def run(sup, now, seconds, step=0.5):
    """Calls check() every `step` seconds of the fake clock, as the launcher's loop does."""
    results = []
    for _ in range(int(seconds / step)):
        results.append(sup.check())
        if not results[-1]:
            break
        now[0] += step
    return results


def test_a_dead_process_is_restarted_after_each_backoff_until_the_cap():
    stack, now, restarted_at = FakeStack(-9), [0.0], []
    sup = Supervisor(stack, clock=lambda: now[0])
    stack.start = lambda role: restarted_at.append(now[0])
    results = run(sup, now, sum(BACKOFF_S) + 10)
    assert results[-1] is False  # the cap stops the supervisor
    # Each restart comes its backoff after the poll that saw the death; the next poll sees it die again.
    expected, seen = [], 0.0
    for delay in BACKOFF_S[:MAX_RESTARTS]:
        expected.append(seen + delay)
        seen = expected[-1] + 0.5
    assert restarted_at == expected


def test_check_returns_at_once_while_a_restart_waits_out_its_backoff():
    stack, now = FakeStack(-9), [0.0]
    sup = Supervisor(stack, clock=lambda: now[0])
    assert sup.check() and stack.started == []  # seen dead: scheduled, not slept on
    now[0] += BACKOFF_S[0] / 2
    assert sup.check() and stack.started == []
    now[0] += BACKOFF_S[0]
    assert sup.check() and stack.started == ["node2"]


def test_restarts_long_ago_do_not_count_against_the_cap():
    stack, now = FakeStack(1), [0.0]
    sup = Supervisor(stack, clock=lambda: now[0])
    for _ in range(MAX_RESTARTS + 1):
        assert sup.check()   # schedules
        now[0] += 1000       # outside the window each time, and past any backoff
        assert sup.check()   # restarts
    assert len(stack.started) == MAX_RESTARTS + 1


def test_a_refused_configuration_is_not_restarted():
    stack = FakeStack(CONFIG_REFUSED)
    assert not Supervisor(stack).check() and stack.started == []


def test_a_dead_nginx_is_named_and_restarted(capsys):
    stack, now = FakeStack(1, what="node2's nginx"), [0.0]
    sup = Supervisor(stack, clock=lambda: now[0])
    run(sup, now, BACKOFF_S[0] + 1)
    assert stack.started == ["node2"] and "node2's nginx exited with code 1" in capsys.readouterr().out

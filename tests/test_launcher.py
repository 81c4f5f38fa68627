"""launcher/__main__.py's supervision: restart with backoff and a cap; never restart a refused config."""
from launcher.__main__ import BACKOFF_S, CONFIG_REFUSED, MAX_RESTARTS, Supervisor


class FakeProc:
    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code


class FakeStack:
    def __init__(self, code):
        self.procs, self.started, self.code = {"node2": FakeProc(code)}, [], code

    def start(self, role):
        self.started.append(role)
        self.procs[role] = FakeProc(self.code)  # dies again at once


def test_a_dead_process_is_restarted_with_backoff_until_the_cap():
    stack, slept, now = FakeStack(-9), [], [0.0]
    sup = Supervisor(stack, clock=lambda: now[0], sleep=slept.append)
    results = []
    for _ in range(MAX_RESTARTS + 1):
        results.append(sup.check())
        now[0] += 1
    assert results == [True] * MAX_RESTARTS + [False]
    assert stack.started == ["node2"] * MAX_RESTARTS and slept == list(BACKOFF_S[:MAX_RESTARTS])


def test_restarts_long_ago_do_not_count_against_the_cap():
    stack, now = FakeStack(1), [0.0]
    sup = Supervisor(stack, clock=lambda: now[0], sleep=lambda s: None)
    for _ in range(MAX_RESTARTS):
        assert sup.check()
        now[0] += 1000  # outside the window each time
    assert sup.check() and len(stack.started) == MAX_RESTARTS + 1


def test_a_refused_configuration_is_not_restarted():
    stack = FakeStack(CONFIG_REFUSED)
    assert not Supervisor(stack, sleep=lambda s: None).check() and stack.started == []

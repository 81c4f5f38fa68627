"""node1/quotas.py: each limit refuses with a Retry-After that says when waiting helps."""
import pytest

from node1.ledger import DAY_S, Ledger, UsageRow
from node1.quotas import PolicyRefused, QuotaExceeded, Quotas
from node1.store import Store
from node1.tenants import Policy, Tenant

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture()
def ledger(tmp_path):
    return Ledger(Store.open("", tmp_path))


def spend(ledger, name, ts, tokens):
    ledger.record(UsageRow(name, ts, "m", tokens, 0, "stop", "n1", "n2", 15, 15))


def test_requests_per_minute_counts_every_request_and_says_when_one_leaves(ledger):
    clock, t = Clock(), Tenant("a", Policy(rpm=2))
    q = Quotas(ledger, clock)
    q.acquire(t, generation=False)
    clock.now += 10
    q.acquire(t, generation=True)
    with pytest.raises(QuotaExceeded, match="2 requests per minute") as err:
        q.acquire(t, generation=False)
    assert err.value.retry_after == 50
    clock.now = T0 + 60
    q.acquire(t, generation=False)


def test_concurrent_requests_are_given_back(ledger):
    t = Tenant("a", Policy(max_concurrent=1))
    q = Quotas(ledger, Clock())
    q.acquire(t, generation=True)
    with pytest.raises(QuotaExceeded, match="1 requests at once") as err:
        q.acquire(t, generation=True)
    assert err.value.retry_after == 1
    q.acquire(t, generation=False)  # a non-generation takes no slot
    q.release(t)
    q.acquire(t, generation=True)


def test_tokens_per_minute_come_from_the_ledger(ledger):
    clock, t = Clock(), Tenant("a", Policy(tpm=100))
    q = Quotas(ledger, clock)
    spend(ledger, "a", T0 - 30, 60)
    spend(ledger, "a", T0 - 10, 50)
    spend(ledger, "b", T0 - 10, 1000)  # another tenant's tokens are not a's
    with pytest.raises(QuotaExceeded, match="100 tokens per minute") as err:
        q.acquire(t, generation=True)
    assert err.value.retry_after == 30  # once the first row leaves the window, 50 < 100
    q.acquire(t, generation=False)  # listing models spends no tokens
    clock.now += 31
    q.acquire(t, generation=True)


def test_tokens_per_day_wait_for_utc_midnight(ledger):
    clock, t = Clock(), Tenant("a", Policy(tokens_per_day=100))
    q = Quotas(ledger, clock)
    spend(ledger, "a", T0 - 3600 * 7, 100)  # 01:00 UTC the same day
    with pytest.raises(QuotaExceeded, match="per day") as err:
        q.acquire(t, generation=True)
    assert err.value.retry_after == 16 * 3600
    clock.now = T0 + 16 * 3600
    q.acquire(t, generation=True)
    assert DAY_S == 86400


def test_models_and_max_tokens_outside_the_policy_are_refused_for_good(ledger):
    q, t = Quotas(ledger, Clock()), Tenant("a", Policy(max_tokens=10, models=("ok",)))
    q.check_request(t, "ok", 10)
    with pytest.raises(PolicyRefused, match="may not use model") as err:
        q.check_request(t, "other", 1)
    assert err.value.param == "model"
    with pytest.raises(PolicyRefused, match="over this key's limit of 10"):
        q.check_request(t, None, 11)

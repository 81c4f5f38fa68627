"""node1/store.py on a real PostgreSQL server: tenants, the chain from many writers, and verification."""
import pytest

from node1.ledger import Ledger, UsageRow
from node1.ledger_verify import appraise_signers, read_rows, verify_chain
from node1.store import Store
from node1.tenants import Policy, Tenants, Unauthorized
from tests.conftest import run_concurrently
from tests.e2e import PORT_BASE
from tests.pg import pg_bin, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    pg_bin() is None, reason="PostgreSQL's initdb/pg_ctl are not installed (make setup installs Debian's postgresql)")]


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server(PORT_BASE + 60) as url:
        yield url


def test_tenants_and_an_exact_chain_from_two_replicas(pg_url):
    one, two = Store(pg_url), Store(pg_url)
    key = Tenants(one).create("alice", Policy(rpm=3))
    assert Tenants(two).authenticate(f"Bearer {key}").policy.rpm == 3
    a, b = Ledger(one), Ledger(two)

    def write():
        for i in range(10):
            (a if i % 2 else b).record(UsageRow("alice", 1_800_000_000.0, "m", 1, 2, "stop", "n1", "n2", 15, 15))

    run_concurrently(write, 8)
    assert verify_chain(read_rows(one), appraise_signers(one, None)) is None
    assert a.usage_by_day("alice")[0]["requests"] == 80 and a.usage_by_day("alice")[0]["total_tokens"] == 240
    one.rows("UPDATE ledger SET prompt_tokens = 0 WHERE seq = 7")
    finding = verify_chain(read_rows(one), appraise_signers(one, None))
    assert (finding.seq, finding.kind) == (7, "edited")
    Tenants(one).revoke("alice")
    with pytest.raises(Unauthorized):
        Tenants(two).authenticate(f"Bearer {key}")

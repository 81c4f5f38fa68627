"""32 concurrent clients on the real stack (issue 13 item 10; `make load` is the long version): a seeded mix of
plain, streamed and dropped greedy requests; no 5xx and no 503, every completed reply equal to its own
single-request output, and each node's gauges back to 0 afterwards."""
from types import SimpleNamespace

import pytest

from benchmarks.load_client import judge, plan, references, run_mix
from benchmarks.load_probe import GAUGES, NODES, nonzero, settled_gauges
from tests.e2e import start_stack

pytestmark = pytest.mark.slow
CLIENTS, REQUESTS = 32, 64  # 32: node1's TWINTEE_MAX_CONCURRENT, so no client may be refused
MAX_TOKENS = (16, 24)  # short budgets and 3 prompts keep the sequential references to ~6 requests
DEADLINE_S = 300  # no request starts after this; all 64 take ~30-60 s on 2 idle cores


@pytest.fixture(scope="module")
def load(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("load-logs"))
    try:
        url = s.url("node1")
        jobs = plan(REQUESTS, MAX_TOKENS, drop_share=0.2, stream_share=0.4, seed=13, prompts=3)
        refs = references(url, s.auth, jobs)
        wall, outcomes = run_mix(url, s.auth, jobs, CLIENTS, DEADLINE_S)
        verdict, gauges = judge(outcomes, refs), settled_gauges(s)
        print(f"\n{len(outcomes)} requests in {wall:.1f} s; statuses {verdict.statuses}; completed {verdict.completed}, "
              f"dropped {verdict.dropped}, failures {verdict.failures[:3]}, mismatches {len(verdict.mismatches)}; "
              f"gauges not 0: {nonzero(gauges)}")
        yield SimpleNamespace(jobs=jobs, outcomes=outcomes, verdict=verdict, gauges=gauges)
    finally:
        s.stop()


def test_every_request_ran_and_none_got_a_server_error_other_than_503(load):
    v = load.verdict
    assert len(load.outcomes) == len(load.jobs)
    broken = [f for f in v.failures if f["status"] != 503]  # no answer, an error event, or a 5xx
    assert not broken and v.server_errors == v.statuses.get("503", 0), broken


def test_no_client_of_32_is_refused_with_503(load):
    # Measured before the fix: 48 of 300 in `make load`, nearly all right after the same client's stream
    # ended or dropped (its slot came back after the client's next request arrived).
    assert "503" not in load.verdict.statuses, [f for f in load.verdict.failures if f["status"] == 503][:3]


def test_every_completed_reply_equals_its_single_request_output(load):
    v = load.verdict
    assert not v.mismatches
    # the mix did what it says: replies completed and compared, and some clients went away mid-stream
    assert v.completed >= CLIENTS // 2 and v.dropped >= 1 and v.by_mode.get("stream", 0) >= 1


@pytest.mark.parametrize("role", NODES)
@pytest.mark.parametrize("gauge", GAUGES)
def test_gauges_fall_back_to_zero_after_the_load(load, role, gauge):
    # node2's batch gauge read 5 and 8 with no session left, before its /metrics refresh zeroed it
    assert load.gauges[role].get(gauge) == 0, load.gauges[role]


def test_health_counts_fall_back_to_zero_after_the_load(load):
    assert load.gauges["node1"]["health.batch"] == 0 and load.gauges["node2"]["health.sessions"] == 0

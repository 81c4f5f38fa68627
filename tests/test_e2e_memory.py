"""Memory comes back (issue 13 item 7): after waves of 32 concurrent long generations each node's worker
holds about what it held after the first wave, instead of growing with every wave."""
from collections import Counter
from types import SimpleNamespace

import pytest

from benchmarks.load_client import Job, PROMPTS, run_mix
from benchmarks.load_probe import NODES, mib, rss, settled_gauges
from tests.e2e import start_stack

pytestmark = pytest.mark.slow
CLIENTS, WAVES, MAX_TOKENS = 32, 3, 96
GROWTH_LIMIT = 1.25  # after the third wave, at most this times the RSS after the first
WAVE_DEADLINE_S = 300


@pytest.fixture(scope="module")
def waves(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("memory-logs"))
    try:
        url, after = s.url("node1"), [rss(s)]  # after[0]: the post-load baseline
        jobs = [Job(i % len(PROMPTS), MAX_TOKENS, "plain") for i in range(CLIENTS)]
        served = []
        for _ in range(WAVES):
            _, outcomes = run_mix(url, s.auth, jobs, CLIENTS, WAVE_DEADLINE_S)
            served.append(dict(Counter(str(o.status) for o in outcomes)))
            settled_gauges(s)  # every session closed on both nodes before reading memory
            after.append(rss(s))
        for role in NODES:
            print(f"\n{role} worker RSS: baseline {mib(after[0][role])}, after each wave "
                  + " -> ".join(mib(a[role]) for a in after[1:]))
        yield SimpleNamespace(after=after, served=served)
    finally:
        s.stop()


def test_every_wave_was_served(waves):
    assert waves.served == [{"200": CLIENTS}] * WAVES


@pytest.mark.parametrize("role", NODES)
def test_rss_after_the_third_wave_is_within_125_percent_of_after_the_first(waves, role):
    first, third = waves.after[1][role], waves.after[3][role]
    assert third <= GROWTH_LIMIT * first, f"{role}: {mib(first)} after wave 1, {mib(third)} after wave 3"

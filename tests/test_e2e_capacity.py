"""The control plane under load (issue 12): node1 admits a bounded number of generations, refuses
the rest at once with 503 and Retry-After, and keeps threads for /health, /metrics and /attestation."""
import pytest
import requests

from tests.e2e import start_stack

pytestmark = pytest.mark.slow


def test_beyond_capacity_new_work_gets_503_with_retry_after_and_health_stays_fast(release_dir, tmp_path_factory):
    # Issue 12: under 32 concurrent long generations node1's /health gave no answer for ~100 s.
    import time

    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"))  # the default: 32 generations at once
    try:
        url = s.url("node1")
        body = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 200, "stream": True}
        streams = [requests.post(url + "/generate", headers=s.auth, json=body, stream=True, timeout=120) for _ in range(32)]
        assert all(r.status_code == 200 for r in streams)
        refused = requests.post(url + "/generate", headers=s.auth, json=body, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert "capacity" in refused.json()["error"]
        for path in ("/health", "/metrics", "/attestation?nonce=" + "00" * 32):
            t0 = time.monotonic()
            assert requests.get(url + path, timeout=10).status_code == 200
            print(f"{path} answered in {time.monotonic() - t0:.3f} s with 32 generations in flight and one refused")
            assert time.monotonic() - t0 < 2.0  # the deadline is the behaviour under test
        for r in streams:
            r.close()  # clients going away give their slots back
        deadline = time.monotonic() + 30
        while requests.post(url + "/generate", headers=s.auth, json={"prompt": "hi", "max_tokens": 2}, timeout=30).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        s.stop()

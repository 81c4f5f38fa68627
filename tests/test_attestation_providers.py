"""Tests for the attesters: a fake configfs-tsm kernel and a fake dstack guest agent on a unix socket."""
import errno
import hashlib
import json
import os
import shutil
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from dstack_sdk.dstack_client import replay_rtmr as sdk_replay_rtmr

from attestation.errors import ProviderError
from attestation.evidence import hardware_report_data, validate
from attestation.measure import combine
from attestation.providers import make_attester
from attestation.providers.configfs_tsm import ConfigfsTsmAttester
from attestation.providers.dstack import DstackAttester, event_log_matches, replay_rtmr
from attestation.providers.simulated import SimulatedAttester, init_simulated_platform

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "tee-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"TEE samples folder {SAMPLES} is absent")
RTMR3, REPORT_DATA = slice(520, 568), slice(568, 632)  # offsets in a v4 TDX quote (48-byte header + TD report)
COMPONENTS = {"code": "01" * 32, "manifest": "02" * 32, "config": "03" * 32}
MEASUREMENT = {"role": "node2", "measurement": combine(COMPONENTS), "components": COMPONENTS}
RD = bytes(range(64))


def sample_quote(report_data: bytes = bytes(64), rtmr3: bytes | None = None) -> bytes:
    quote = bytearray((SAMPLES / "tdx_quote").read_bytes())
    quote[REPORT_DATA] = report_data
    if rtmr3 is not None:
        quote[RTMR3] = rtmr3
    return bytes(quote)


class FakeKernel:
    """Plays configfs-tsm: mkdir populates attributes, reading `outblob` (a FIFO) yields a report for `inblob`."""

    def __init__(self, provider: str, *, interfere=False, ignore_inblob=False):
        self.provider, self.interfere, self.ignore_inblob = provider, interfere, ignore_inblob
        self.threads, self.stop = [], threading.Event()

    def mkdir(self, entry: Path):
        os.mkdir(entry)
        (entry / "provider").write_text(self.provider + "\n")
        (entry / "generation").write_text("0\n")
        os.mkfifo(entry / "outblob")
        thread = threading.Thread(target=self._serve, args=(entry,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def rmdir(self, entry: Path):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        shutil.rmtree(entry)

    def _serve(self, entry: Path):
        fd = self._open_when_read(entry / "outblob")
        if fd is None:
            return
        inblob = (entry / "inblob").read_bytes()
        if self.interfere:  # another process wrote inblob between the attester's write and read
            (entry / "generation").write_text("1\n")
        report = self._report(inblob)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as out:
            out.write(report)

    def _open_when_read(self, fifo: Path):
        while not self.stop.is_set():
            try:
                return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:  # ENXIO: nobody is reading yet
                if e.errno != errno.ENXIO:
                    raise
                time.sleep(0.001)
        return None

    def _report(self, inblob: bytes) -> bytes:
        if self.provider == "sev_guest":
            return b"SNP-REPORT" + inblob
        return sample_quote(bytes(64) if self.ignore_inblob else inblob.ljust(64, b"\0"))


def configfs_attester(tmp_path, tee_type, kernel):
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    attester = ConfigfsTsmAttester(tee_type, measurement=MEASUREMENT, root=root, clock=lambda: 1000.0)
    attester._mkdir, attester._rmdir = kernel.mkdir, kernel.rmdir
    return attester, root


@needs_samples
def test_configfs_tdx_quote_binds_report_data(tmp_path):
    attester, root = configfs_attester(tmp_path, "tdx", FakeKernel("tdx_guest"))
    ev = validate(attester.evidence(RD))
    assert ev["tee_type"] == "tdx" and ev["report_data"] == RD.hex() and ev["issued_at"] == 1000.0
    quoted = bytes.fromhex(ev["quote"])[REPORT_DATA]
    assert quoted == hardware_report_data(RD, "node2", MEASUREMENT["measurement"])
    assert list(root.iterdir()) == []  # the entry is removed


def test_configfs_sev_snp_report(tmp_path):
    attester, root = configfs_attester(tmp_path, "sev-snp", FakeKernel("sev_guest"))
    ev = validate(attester.evidence(RD))
    report = bytes.fromhex(ev["report"])
    assert report == b"SNP-REPORT" + hardware_report_data(RD, "node2", MEASUREMENT["measurement"])
    assert list(root.iterdir()) == []


def test_configfs_wrong_provider(tmp_path):
    attester, root = configfs_attester(tmp_path, "tdx", FakeKernel("sev_guest"))
    with pytest.raises(ProviderError, match="sev_guest"):
        attester.evidence(RD)
    assert list(root.iterdir()) == []


def test_configfs_generation_moved(tmp_path):
    attester, _ = configfs_attester(tmp_path, "sev-snp", FakeKernel("sev_guest", interfere=True))
    with pytest.raises(ProviderError, match="generation"):
        attester.evidence(RD)


@needs_samples
def test_configfs_quote_for_other_report_data(tmp_path):
    attester, _ = configfs_attester(tmp_path, "tdx", FakeKernel("tdx_guest", ignore_inblob=True))
    with pytest.raises(ProviderError, match="different report data"):
        attester.evidence(RD)


def test_configfs_absent(tmp_path):
    attester = ConfigfsTsmAttester("tdx", measurement=MEASUREMENT, root=tmp_path / "no-configfs")
    with pytest.raises(ProviderError, match="configfs-tsm"):
        attester.evidence(RD)


class FakeAgent(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The dstack guest agent's HTTP API on a unix socket: POST /GetQuote {"report_data": hex}."""

    daemon_threads = True
    mode = "honest"
    requests: list

    def answer(self, report_data_hex: str):
        events = [{"imr": 3, "event_type": 134217729, "digest": hashlib.sha384(name.encode()).hexdigest(),
                   "event": name, "event_payload": "00"} for name in ("app-id", "compose-hash", "key-provider")]
        rtmr3 = bytes.fromhex(replay_rtmr(events))
        rd = bytes.fromhex(report_data_hex).ljust(64, b"\0")  # the agent zero-pads to 64 bytes
        if self.mode == "tampered-log":
            events[1]["digest"] = "00" * 48
        quote = sample_quote(bytes(64) if self.mode == "other-report-data" else rd, rtmr3)
        return {"quote": quote.hex(), "event_log": json.dumps(events), "report_data": report_data_hex, "vm_config": ""}


class AgentHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        if self.server.mode == "error" or self.path != "/GetQuote":
            self.send_response(500)
            self.end_headers()
            return
        payload = json.dumps(self.server.answer(body["report_data"])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


@pytest.fixture
def agent(tmp_path):
    path = str(tmp_path / "dstack.sock")
    server = FakeAgent(path, AgentHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server, path
    server.shutdown()
    server.server_close()


@needs_samples
def test_dstack_quote_and_event_log(agent):
    server, path = agent
    ev = validate(make_attester("dstack", role="node2", measurement=MEASUREMENT, dstack_socket=path,
                                clock=lambda: 5.0).evidence(RD))
    expected = hardware_report_data(RD, "node2", MEASUREMENT["measurement"])
    assert server.requests == [("/GetQuote", {"report_data": expected.hex()})]
    assert bytes.fromhex(ev["quote"])[REPORT_DATA] == expected
    assert event_log_matches(ev["event_log"], bytes.fromhex(ev["quote"])[RTMR3].hex())
    assert [e["event"] for e in ev["event_log"]] == ["app-id", "compose-hash", "key-provider"]


@needs_samples
@pytest.mark.parametrize("mode, message", [
    ("tampered-log", "RTMR3"), ("other-report-data", "different report data"), ("error", "request failed")])
def test_dstack_agent_misbehaving(agent, mode, message):
    server, path = agent
    server.mode = mode
    with pytest.raises(ProviderError, match=message):
        DstackAttester(measurement=MEASUREMENT, socket=path).evidence(RD)


def test_dstack_socket_absent(tmp_path):
    with pytest.raises(ProviderError, match="no dstack agent"):
        DstackAttester(measurement=MEASUREMENT, socket=str(tmp_path / "none.sock")).evidence(RD)


def test_rtmr_replay_matches_the_sdk():
    digests = [hashlib.sha384(b"a").hexdigest(), "ab" * 20, hashlib.sha384(b"c").hexdigest()]
    events = [{"imr": 3, "digest": d} for d in digests] + [{"imr": 2, "digest": "ff" * 48}]
    assert replay_rtmr(events) == sdk_replay_rtmr(digests)
    assert replay_rtmr([]) == "00" * 48
    assert replay_rtmr(events[:1]) == hashlib.sha384(bytes(48) + bytes.fromhex(digests[0])).hexdigest()


def test_make_attester_kinds(tmp_path):
    init_simulated_platform(tmp_path / "sim")
    sim = make_attester("simulated", role="node2", measurement=MEASUREMENT, sim_dir=tmp_path / "sim")
    assert isinstance(sim, SimulatedAttester) and sim.tee_type == "simulated"
    assert make_attester("sev-snp", role="node2", measurement=MEASUREMENT).tee_type == "sev-snp"
    assert make_attester("dstack", role="node2", measurement=MEASUREMENT).tee_type == "dstack"
    with pytest.raises(ProviderError):
        make_attester("sgx", role="node2", measurement=MEASUREMENT)
    with pytest.raises(ProviderError):
        make_attester("tdx", role="node1", measurement=MEASUREMENT)
    with pytest.raises(ProviderError):
        make_attester("simulated", role="node2", measurement=MEASUREMENT)

"""Phala dstack evidence: a TDX quote from the guest agent plus its event log, replayed to the quoted RTMR3."""
import hashlib
import json
import time

import httpx
from dstack_sdk import DstackClient

from attestation.canonical import hex_field
from attestation.errors import EvidenceError, ProviderError
from attestation.evidence import hardware_report_data, make_body
from attestation.providers.quote_binding import bound_measurements

RTMR_BYTES = 48
MAX_EVENTS = 4096
EVENT_KEYS = {"imr", "event_type", "digest", "event", "event_payload"}


def parse_event_log(raw) -> list[dict]:
    """The agent's event log (JSON text or list) as validated events, or EvidenceError."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise EvidenceError("event_log is not JSON") from None
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
        raise EvidenceError("event_log must be a list of events")
    return [_event(e) for e in raw]


def _event(e) -> dict:
    if not isinstance(e, dict) or not EVENT_KEYS <= set(e):
        raise EvidenceError(f"each event needs {sorted(EVENT_KEYS)}")
    imr = e["imr"]
    if isinstance(imr, bool) or not isinstance(imr, int) or not 0 <= imr <= 3:
        raise EvidenceError("event imr must be 0..3")
    digest = hex_field(e["digest"])
    if digest is None:
        raise EvidenceError("event digest is not hex")
    if len(digest) > RTMR_BYTES:
        raise EvidenceError("event digest is longer than an RTMR")
    if not all(isinstance(e[k], str) for k in ("event", "event_payload")) or not isinstance(e["event_type"], int):
        raise EvidenceError("event fields have the wrong types")
    return {k: e[k] for k in sorted(EVENT_KEYS)}


def replay_rtmr(events: list[dict], imr: int = 3) -> str:
    """RTMR[imr] as the event log claims it: SHA-384 extend from 48 zero bytes over the digests."""
    mr = bytes(RTMR_BYTES)
    for e in events:
        if e["imr"] == imr:
            # dstack zero-pads short digests to the register width before extending.
            mr = hashlib.sha384(mr + bytes.fromhex(e["digest"]).ljust(RTMR_BYTES, b"\0")).digest()
    return mr.hex()


def event_log_matches(events: list[dict], quoted_rtmr3: str) -> bool:
    """The event log is trusted only if it replays to the RTMR3 the hardware signed."""
    return replay_rtmr(events, 3) == quoted_rtmr3


class DstackAttester:
    """Gets evidence from the dstack guest agent (`GetQuote` on its unix socket) via dstack-sdk."""

    tee_type = "dstack"

    def __init__(self, *, measurement: dict, socket: str, clock=time.time, timeout_s: float = 10.0):
        self._measurement = measurement
        self._socket = socket
        self._clock = clock
        self._timeout = timeout_s

    def evidence(self, report_data: bytes) -> dict:
        m = self._measurement
        blob = hardware_report_data(report_data, m["role"], m["measurement"])
        body = make_body(self.tee_type, m, report_data, self._clock(), debug=False)
        quote, events = self._get_quote(blob)
        quoted = bound_measurements(quote, blob, "the dstack agent")
        if not event_log_matches(events, quoted["rtmr3"]):
            raise ProviderError("dstack event log does not replay to the quoted RTMR3")
        return {**body, "quote": quote.hex(), "event_log": events}

    def _get_quote(self, blob: bytes) -> tuple[bytes, list[dict]]:
        try:
            response = DstackClient(self._socket, timeout=self._timeout).get_quote(blob)
            quote = hex_field(response.quote)
            if quote is None:
                raise ValueError("quote is not hex")
        except FileNotFoundError:
            raise ProviderError(f"no dstack agent socket at {self._socket}") from None
        except httpx.HTTPError as e:
            raise ProviderError(f"dstack agent request failed: {type(e).__name__}") from None
        except ValueError as e:  # pydantic's ValidationError and bad hex are ValueErrors
            raise ProviderError(f"dstack agent answered malformed JSON: {type(e).__name__}") from None
        try:
            return quote, parse_event_log(response.event_log)
        except EvidenceError as e:
            raise ProviderError(f"dstack agent event log: {e.detail}") from None

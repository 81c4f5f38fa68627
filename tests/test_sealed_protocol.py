"""shared/sealed_protocol.py: both halves of the sealed format, and the page's webui/sealed.js speaking
it with the same constants."""
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import sealed_protocol as sp
from shared.identity import raw_public

SEALED_JS = Path(__file__).resolve().parents[1] / "webui" / "sealed.js"
# The page's suite, by @hpke/core's class names, for the suite the Python module names.
JS_SUITE = {"kem": "DhkemX25519HkdfSha256", "kdf": "HkdfSha256", "aead": "Aes256Gcm"}


def js_constants() -> dict:
    """The top-level `const NAME = value;` lines of webui/sealed.js, their values as Python sees them."""
    found = {}
    for name, value in re.findall(r"^const (\w+) = (.+);$", SEALED_JS.read_text(), re.M):
        if m := re.fullmatch(r'new TextEncoder\(\)\.encode\("([^"]*)"\)', value):
            found[name] = m.group(1).encode()
        elif re.fullmatch(r"\d+", value):
            found[name] = int(value)
        elif m := re.fullmatch(r'"([^"]*)"', value):
            found[name] = m.group(1)
        else:
            found[name] = value
    return found


def test_the_page_uses_the_python_module_s_constants():
    js = js_constants()
    assert {name: js.get(name) for name in ("INFO", "EVENT_AD", "KEY_BYTES", "INDEX_BYTES", "NONCE_BYTES", "DONE")} == {
        "INFO": sp.INFO, "EVENT_AD": sp.EVENT_AD, "KEY_BYTES": sp.KEY_BYTES, "INDEX_BYTES": sp.INDEX_BYTES,
        "NONCE_BYTES": sp.NONCE_BYTES, "DONE": sp.DONE}


def test_the_page_uses_the_python_module_s_suite():
    suite = js_constants()["suite"]
    assert suite == ("new CipherSuite({ kem: new %(kem)s(), kdf: new %(kdf)s(), aead: new %(aead)s() })" % JS_SUITE)
    node1 = X25519PrivateKey.generate()
    named = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    assert named.decrypt(sp.SUITE.encrypt(b"x", node1.public_key(), info=sp.INFO), node1, info=sp.INFO) == b"x"


def test_the_page_declares_no_protocol_constant_left_unchecked():
    assert set(js_constants()) == {"INFO", "EVENT_AD", "KEY_BYTES", "INDEX_BYTES", "NONCE_BYTES", "DONE", "suite"}


def test_event_ad_is_the_prefix_then_the_index_as_big_endian_bytes():
    assert sp.event_ad(258) == sp.EVENT_AD + b"\x00" * (sp.INDEX_BYTES - 2) + b"\x01\x02"


def test_a_sealed_request_opens_to_the_body_and_response_key():
    node1 = X25519PrivateKey.generate()
    wire, key = sp.seal_request({"prompt": "hi"}, raw_public(node1))
    assert len(bytes.fromhex(wire["enc"])) == sp.ENC_BYTES and len(key) == sp.KEY_BYTES
    assert sp.open_request(wire, node1) == ({"prompt": "hi"}, key)
    with pytest.raises(sp.SealedRequestError, match="does not open"):
        sp.open_request(wire, X25519PrivateKey.generate())


def test_events_open_in_order_and_only_in_order():
    key = bytes(range(32))
    events = list(sp.seal_events(['{"text": "a"}', '{"text": "b"}', sp.DONE], key))
    opener = sp.EventOpener(key)
    assert [opener.open(e) for e in events] == ['{"text": "a"}', '{"text": "b"}', sp.DONE] and opener.done
    with pytest.raises(sp.SealedStreamError, match="event 0"):
        sp.EventOpener(key).open(events[1])

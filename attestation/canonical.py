"""The one byte encoding of a JSON value that is signed, hashed, authenticated or stored: sorted keys,
no spaces, ASCII only. Evidence, policies, manifests, the audit log and the nodes' frame headers all
use it (the page's webui/canonical.js mirrors it, checked by tests/test_webui_browser.py)."""
import json


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

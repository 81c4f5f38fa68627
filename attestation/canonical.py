"""JSON as TwinTEE signs it and as it accepts it from outside.

`canonical_json` is the one byte encoding of a JSON value that is signed, hashed, authenticated or
stored: sorted keys, no spaces, ASCII only. Evidence, policies, manifests, the audit log and the nodes'
frame headers all use it (the page's webui/canonical.js mirrors it, checked by tests/test_webui_browser.py).

`parse_json` is the one strict reader for bodies from the network, used by every HTTP service: it
refuses, naming the problem, what json.loads lets through or crashes on (issue 12): nesting deep enough
to exhaust the parser's recursion (a 500 before), and strings that are not valid Unicode (a lone
surrogate such as "\\ud800" parses, then fails wherever the text is encoded).
"""
import json

MAX_JSON_DEPTH = 64  # our requests nest 3 levels deep


class JsonError(ValueError):
    """A body is not acceptable JSON; the message names why and is safe to show the sender."""


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse_json(raw: bytes):
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JsonError(f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise JsonError("the request body is not valid JSON") from None
    _check(value, 0)
    return value


def _check(value, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise JsonError(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JsonError("the request body holds a string that is not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check(k, depth + 1)
            _check(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check(v, depth + 1)

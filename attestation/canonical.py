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
    """A body is not acceptable JSON; the message names why and is safe to show the sender, and
    `status` is the HTTP status that says so (400, or 413 / 415 from read_json_request)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def read_json_request(req, max_bytes: int):
    """A Flask/werkzeug request's JSON body, for every service: another content type is a 415 (a
    cross-site form or text/plain post is refused), a body over the limit a 413, counted while reading
    (a chunked body without a length is cut off at the limit, not buffered whole), else parse_json."""
    if req.mimetype != "application/json":
        raise JsonError("the request body must be JSON, sent with Content-Type: application/json", 415)
    if req.content_length is not None and req.content_length > max_bytes:
        raise JsonError(f"request body is over the limit of {max_bytes} bytes", 413)
    raw = req.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise JsonError(f"request body is over the limit of {max_bytes} bytes", 413)
    return parse_json(raw)


def parse_json(raw: bytes):
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JsonError(f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise JsonError("the request body is not valid JSON") from None
    _check(value, 0)
    return value


def json_object(raw: bytes | str) -> dict | None:
    """The JSON object `raw` holds under parse_json's rules, or None for anything else (not JSON, too
    deep, not an object): for answers from a peer not trusted yet (node2 before the handshake, the key
    broker, node1 as the client sees it), where a malformed one is the caller's named failure."""
    try:
        value = parse_json(raw)
    except JsonError:
        return None
    return value if isinstance(value, dict) else None


def hex_field(value, size: int | tuple[int, int] | None = None, *, lowercase: bool = False) -> bytes | None:
    """The one parser for "N bytes of hex" from outside (requests, evidence, policies, key files).

    -> the bytes if `value` is a string of hex digits only (no spaces, signs or prefix) of exactly
    `size` bytes, of (min, max) bytes inclusive, or of any length when `size` is None; None for
    anything else, so each caller raises its own named error. The length is checked before any
    decoding, so an absurdly long value costs nothing. `lowercase` demands the one spelling that a
    canonical transcript needs (the handshake hashes the hex as sent).
    """
    if not isinstance(value, str):
        return None
    low, high = (size, size) if isinstance(size, int) else (size or (0, None))
    if len(value) % 2 or len(value) < 2 * low or (high is not None and len(value) > 2 * high):
        return None
    if lowercase and value != value.lower():
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    # fromhex skips whitespace: a shorter result means the value held some.
    return raw if 2 * len(raw) == len(value) else None


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

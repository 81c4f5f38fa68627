"""node1's answers as the client reads them: from a server it has not verified yet (or may stop
trusting), so strictly (attestation/canonical.py's parse_json bounds the nesting), and a malformed one
is a named failure for the caller to report, never a traceback (60,000 nested brackets raised
RecursionError out of requests' .json())."""
from attestation.canonical import JsonError, parse_json


def json_object(raw: bytes | str) -> dict | None:
    """The JSON object `raw` holds, or None for anything else (not JSON, too deep, not an object)."""
    try:
        value = parse_json(raw.encode() if isinstance(raw, str) else raw)
    except (JsonError, UnicodeEncodeError):
        return None
    return value if isinstance(value, dict) else None

"""Checks a TDX quote fresh from a hardware provider really carries the report data we asked for."""
from attestation.errors import ProviderError
from attestation.tdx import QuoteError, parse_measurements


def bound_measurements(quote: bytes, report_data: bytes, source: str) -> dict:
    """-> the quote's measurements; ProviderError if it does not parse or binds other report data.

    A quote for someone else's report data means the request was shared or the source misbehaved.
    """
    try:
        quoted = parse_measurements(quote)
    except QuoteError as e:
        raise ProviderError(f"{source} returned an unparseable TDX quote: {e.detail}") from None
    if quoted["report_data"] != report_data.hex():
        raise ProviderError(f"{source} quote carries different report data than requested")
    return quoted

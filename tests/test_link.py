"""node1/link.py: how node2's refusal of a step is named (its transports: tests/test_node2_stream.py)."""
import pytest

from node1.link import _error_of


def test_a_refusal_is_named_by_node2s_error_field():
    assert _error_of(409, b'{"error": "unknown session"}') == "unknown session"


@pytest.mark.parametrize("content", [b"[" * 60_000, b'"\\ud800"', b"<html>", b"[1]", b""],
                         ids=["nested", "lone-surrogate", "not-json", "not-an-object", "empty"])
def test_an_answer_that_is_not_a_json_object_is_named_by_its_status(content):
    assert _error_of(502, content) == "502"  # the nested one raised RecursionError out of the step

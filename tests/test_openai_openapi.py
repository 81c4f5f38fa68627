"""node1/openapi.py: /openapi.json is a valid OpenAPI 3.1 document that describes every route node1 has,
with this node's limits. The running node against it: tests/test_e2e_openai.py (schemathesis)."""
import re

import pytest

from node1.app import create_app
from tests.conftest import tenant_gate
from tests.test_openai_api import FakeRuntime


@pytest.fixture()
def app(tmp_path):
    rt = FakeRuntime()
    return create_app(rt.config, runtime=rt, gate=tenant_gate(tmp_path, rt)[0])


def routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        out |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def test_every_route_is_described_and_nothing_else(app):
    spec = app.test_client().get("/openapi.json").get_json()
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert described == routes(app)


def test_the_document_is_valid_openapi_with_this_nodes_limits(app):
    from schemathesis.openapi import from_dict

    spec = app.test_client().get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    chat = spec["components"]["schemas"]["ChatRequest"]["properties"]
    assert chat["max_tokens"]["maximum"] == app.extensions["twintee"].config.model.max_new_tokens
    schema = from_dict(spec)
    assert len(list(schema.get_all_operations())) == len(routes(app))

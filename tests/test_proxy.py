"""attestation/proxy.py and launcher/proxy.py: the nginx configuration each role runs behind."""
import json
import re
import subprocess
from pathlib import Path

import pytest

from attestation.measure import ROLE_DIRS, role_files
from attestation.proxy import ERRORS, ROLES, render
from broker.config import BrokerConfig
from launcher import proxy
from launcher.stack import broker_env
from node1.config import Node1Config
from node2.config import Node2Config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env", [{}, {"TWINTEE_MAX_BODY_BYTES": "4096", "TWINTEE_BROKER_MAX_REQUEST_BYTES": "2048"}])
def test_nginx_refuses_exactly_the_bodies_each_role_refuses(env):
    assert proxy.max_body_bytes("node1", env) == Node1Config.from_env(env).max_body_bytes
    assert proxy.max_body_bytes("node2", env) == Node2Config.from_env(env).max_frame_bytes
    broker = BrokerConfig.from_env(broker_env({"TWINTEE_DATA_DIR": "/d", **env}))
    assert proxy.max_body_bytes("broker", env) == broker.max_request_bytes


@pytest.mark.parametrize("role", sorted(ROLE_DIRS))
def test_the_template_is_in_the_measurement_of_every_role_it_fronts(role):
    assert Path("attestation/proxy.py") in role_files(ROOT, role)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_rendered_configuration_is_valid_nginx(role, tmp_path):
    command = proxy.prepare(role, tmp_path, "127.0.0.1", 18999, {}, shutdown_s=30)
    out = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    conf = (tmp_path / f"{role}-nginx" / "nginx.conf").read_text()
    assert f"unix:{tmp_path / (role + '.sock')}" in conf and "listen 127.0.0.1:18999;" in conf
    assert "access_log off;" in conf and "/var/log" not in conf


def test_every_status_nginx_can_return_has_a_json_body():
    conf = render("node1", host="127.0.0.1", port=1, socket="/s", prefix="/p", max_body=1024, shutdown_s=5)
    bodies = dict(re.findall(r"return (\d{3}) '(.*?)\\n';", conf))
    assert set(map(int, bodies)) == set(ERRORS) >= {400, 408, 413, 414, 429, 431, 500, 502, 503, 504}
    assert all("error" in json.loads(body) for body in bodies.values())
    assert json.loads(bodies["413"])["error"] == "request body is over the limit of 1024 bytes"  # as the app says
    for status in ERRORS:
        assert re.search(rf"error_page (\d+ )*{status if status != 431 else '494 =431'} ", conf), status


def test_only_node1s_streams_are_unbuffered():
    conf = render("node1", host="127.0.0.1", port=1, socket="/s", prefix="/p", max_body=1024, shutdown_s=5)
    assert conf.count("proxy_buffering off;") == len(streaming_routes()) and "location = /generate {" in conf
    for path in streaming_routes():  # every route node1 may answer with text/event-stream
        assert f"location = {path} {{" in conf, path
    conf = render("node2", host="127.0.0.1", port=1, socket="/s", prefix="/p", max_body=1024, shutdown_s=5)
    assert "proxy_buffering off;" not in conf


def streaming_routes() -> set[str]:
    """node1's routes whose replies may be text/event-stream, from its own OpenAPI description."""
    from node1.config import Node1Config
    from node1.openapi import openapi

    spec = openapi(Node1Config(), "smollm2")
    return {path for path, ops in spec["paths"].items() for op in ops.values()
            for resp in op.get("responses", {}).values() if "text/event-stream" in resp.get("content", {})}

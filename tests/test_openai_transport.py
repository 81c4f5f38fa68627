"""client/openai_transport.py with node1/openai_sealed.py: the official openai client through the sealed
route of a node1 over a fake pipeline (the WSGI app in-process); the wire carries ciphertext only.
Attestation and a host in the middle against the real processes: tests/test_e2e_openai.py."""
import httpx
import openai
import pytest

from client.openai_transport import NotVerified, VerifyingTransport
from node1.app import create_app
from tests.conftest import tenant_gate
from shared.identity import raw_public
from tests.test_openai_api import MODEL, REPLY, FakeRuntime

SECRET = "the launch code is 5512-alpha"


class Recording(httpx.BaseTransport):
    """The host: forwards to the app and keeps every byte of every request and reply."""

    def __init__(self, app):
        self.inner, self.seen, self.paths = httpx.WSGITransport(app=app), bytearray(), []

    def handle_request(self, request):
        self.paths.append(request.url.path)
        self.seen += request.read()
        r = self.inner.handle_request(request)
        body = r.read()
        self.seen += body
        return httpx.Response(r.status_code, headers=r.headers, content=body)


@pytest.fixture()
def rig(tmp_path):
    rt = FakeRuntime()
    gate, key = tenant_gate(tmp_path, rt)
    host = Recording(create_app(rt.config, runtime=rt, gate=gate))
    transport = VerifyingTransport("http://node1", "unused", inner=host)
    transport.node1_key = raw_public(rt.identity.key)  # as if attested: the e2e test attests for real
    client = openai.OpenAI(base_url="http://node1/v1", api_key=key, max_retries=0,
                           http_client=httpx.Client(transport=transport))
    return client, host


def test_plain_stream_and_models_through_the_seal(rig):
    client, host = rig
    ask = dict(model=MODEL, messages=[{"role": "user", "content": SECRET}], temperature=0)
    assert client.chat.completions.create(**ask).choices[0].message.content == REPLY
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == REPLY and chunks[-1].usage
    assert client.completions.create(model=MODEL, prompt=SECRET, max_tokens=5, temperature=0).choices[0].text == "Hello"
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert set(host.paths) == {"/v1/sealed/openai"}
    for text in (SECRET, REPLY, "Hello", MODEL, "chat.completion"):
        assert text.encode() not in bytes(host.seen)


def test_errors_come_back_sealed_with_their_status_and_shape(rig):
    client, host = rig
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert err.value.param == "model" and b"gpt-4o" not in bytes(host.seen)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=9)
    assert err.value.param == "n"


def test_a_route_without_a_sealed_form_is_never_sent(rig):
    client, host = rig
    with pytest.raises(openai.APIConnectionError) as err:
        client.embeddings.create(model=MODEL, input=SECRET)
    assert isinstance(err.value.__cause__, NotVerified) and host.paths == []


def test_a_tampered_event_fails_to_open(rig):
    client, host = rig
    inner = host.handle_request

    def flip(request):
        r = inner(request)
        body = bytearray(r.read())
        body[40] ^= 1  # inside the first sealed event's ciphertext
        return httpx.Response(r.status_code, headers=r.headers, content=bytes(body))

    host.handle_request = flip
    with pytest.raises(openai.APIConnectionError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert "does not open" in str(err.value.__cause__)


def test_the_key_travels_inside_the_seal_and_a_wrong_one_is_401(rig):
    client, host = rig
    key = client.api_key
    assert key.encode() not in bytes(host.seen) or not host.seen
    client.models.list()
    assert key.split("-", 2)[2].encode() not in bytes(host.seen)  # the secret never crosses in the clear
    with pytest.raises(openai.AuthenticationError) as err:
        client.with_options(api_key="tt-0000000000000000-wrong").models.list()
    assert err.value.code == "invalid_api_key"

"""The chat page: its verifier and canonical JSON under node (fast), and the whole page in real headless
Chromium against real processes (slow): both nodes verified, a sealed chat equal to greedy /generate, and
tampered evidence from a host in the middle shown in red with nothing sent."""
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from attestation.canonical import canonical_json
from attestation.providers.simulated import SimulatedAttester
from attestation.release_dir import release_public_key
from tests.e2e import own_ports, start_stack, tenant_key
from tests.proxy import HostProxy
from tests.test_client import TAMPERS, SimulatedRelease, alter_node2_measurement, swap_node1_key
from tests.test_sealed import HPKE_VECTOR_JS, RFC9180_A1

ROOT = Path(__file__).resolve().parents[1]
WEBUI = ROOT / "webui"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PROMPT = "What is the capital of France?"
MAX_TOKENS = 24
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000"]
RED = "rgb(179, 38, 30)"  # --bad in style.css

# ---- fast: the page's own verifier, run by node on the same modules the browser loads -------------------

VERIFY_JS = f"""
import {{ canonical, hexToBytes, parseLossless }} from "{WEBUI / 'canonical.js'}";
import {{ verifyNode, verifyPolicy }} from "{WEBUI / 'verify.js'}";
let raw = "";
for await (const chunk of process.stdin) raw += chunk;
const input = JSON.parse(raw);
if (input.canonical !== undefined) {{
  console.log(JSON.stringify({{ canonical: canonical(parseLossless(input.canonical)) }}));
}} else {{
  const policy = await verifyPolicy(parseLossless(input.policy), input.pinned);
  const tree = parseLossless(input.attestation);
  const out = {{ policy: policy.ok, nodes: {{}} }};
  for (const role of ["node1", "node2"]) {{
    if (!policy.ok) break;
    const v = await verifyNode(tree.get(role), role, hexToBytes(input.nonce), policy.body);
    out.nodes[role] = {{ ok: v.ok, failed: v.failed }};
  }}
  console.log(JSON.stringify(out));
}}
"""


def run_page_js(payload: dict) -> dict:
    if shutil.which("node") is None:
        pytest.skip("node is not installed; the browser test runs the same checks in Chromium")
    out = subprocess.run(["node", "--input-type=module", "-e", VERIFY_JS], input=json.dumps(payload),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def page_verdict(rel: SimulatedRelease, edit=None, *, nonce=b"\x07" * 32, page_nonce=None, pinned=None, ascii=True):
    doc = rel.attestation(nonce)
    if edit:
        edit(doc)
    return run_page_js({"policy": (rel.dir / "policy.json").read_text(), "nonce": (page_nonce or nonce).hex(),
                        "attestation": json.dumps(doc, indent=2, ensure_ascii=ascii),
                        "pinned": pinned or rel.release_key.public_key().public_bytes_raw().hex()})


@pytest.fixture()
def sim_release(tmp_path):
    return SimulatedRelease(tmp_path)


def test_canonical_json_matches_python_byte_for_byte():
    doc = {"z": [1, 2.5, 300.0, 1e22, 1e-07, -0.0, 2**63, True, None], "a": {"é": "😀 \x7f\x01\n\"\\/ ~"},
           "B": 1700000000.123456, "": {}}
    text = json.dumps(doc, indent=3, ensure_ascii=False)
    assert run_page_js({"canonical": text})["canonical"] == canonical_json(doc).decode()


@pytest.mark.parametrize("ascii", [True, False])
def test_the_page_accepts_genuine_evidence(sim_release, ascii):
    assert page_verdict(sim_release, ascii=ascii) == {
        "policy": True, "nodes": {"node1": {"ok": True, "failed": None}, "node2": {"ok": True, "failed": None}}}


def _attester(rel, **kw):
    return SimulatedAttester(measurement=rel.measurements["node1"], sim_dir=rel.dir / "simulated-tee", **kw)


@pytest.mark.parametrize("case, role, check", [
    ("key swapped", "node1", "report_data"),
    ("measurement altered", "node2", "signature"),
    ("another nonce", "node1", "report_data"),
    ("debug build", "node1", "debug"),
    ("stale evidence", "node1", "freshness"),
    ("older model", "node1", "model"),
    ("hardware type", "node1", "tee_type"),
    ("extra field", "node1", "shape"),
    ("node2 down", "node2", "reachable"),
])
def test_the_page_names_the_failed_check(sim_release, case, role, check):
    rel, nonce = sim_release, b"\x07" * 32
    edits = {
        "key swapped": swap_node1_key,
        "measurement altered": alter_node2_measurement,
        "debug build": lambda d: d.update(node1=rel.node("node1", nonce, _attester(rel, debug=True))),
        "stale evidence": lambda d: d.update(node1=rel.node("node1", nonce, _attester(rel, clock=lambda: time.time() - 900))),
        "older model": lambda d: d["node1"]["model"].update(version=1),
        "hardware type": lambda d: d["node1"]["evidence"].update(tee_type="tdx"),
        "extra field": lambda d: d["node1"]["evidence"].update(prompt="hello"),
        "node2 down": lambda d: d.update(node2={"error": "node2 unreachable"}),
    }
    page_nonce = b"\x08" * 32 if case == "another nonce" else None
    verdict = page_verdict(rel, edits.get(case), nonce=nonce, page_nonce=page_nonce)
    assert verdict["nodes"][role] == {"ok": False, "failed": check}


def test_the_page_refuses_a_policy_not_signed_by_the_pinned_key(sim_release):
    other = "11" * 32
    assert page_verdict(sim_release, pinned=other) == {"policy": False, "nodes": {}}


# ---- slow: real Chromium against the real processes ------------------------------------------------------


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("webui-logs"), **own_ports(31))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="twintee-chromium-")
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(fn, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def open_page(driver, url: str, release_dir: Path, key: str | None = None) -> str:
    """Opens the page as `make run`'s link does, with the default test tenant's key in the fragment."""
    driver.get("about:blank")  # the same URL again would be a same-document fragment change, not a fresh page
    driver.get(f"{url}/#release={release_public_key(release_dir).hex()}&key={key or tenant_key(release_dir)}")
    return wait_for(lambda: (s := js(driver, "return document.getElementById('status').dataset.state")) != "checking" and s,
                    what="the page's attestation verdict")


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    height = js(driver, "return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 160, 800), 4000))
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path


def greedy(stack, prompt: str) -> str:
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    return requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=body, timeout=300).json()["text"]


def send(driver, prompt: str, max_tokens: int) -> None:
    js(driver, "document.getElementById('max-tokens').value = arguments[0];", str(max_tokens))
    js(driver, "const p = document.getElementById('prompt'); p.value = arguments[0];"
               "document.getElementById('composer').requestSubmit();", prompt)


LAST_REPLY = "const m = [...document.querySelectorAll('.msg.assistant')].pop(); return m && [m.dataset.done, m.querySelector('.text').textContent];"
WATCH = """window.__pieces = [];
new MutationObserver(() => { const m = [...document.querySelectorAll('.msg.assistant .text')].pop();
  if (m) window.__pieces.push(m.textContent); }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});"""


@pytest.mark.slow
def test_the_page_verifies_both_nodes_and_streams_the_greedy_reply(stack, browser, release_dir):
    assert open_page(browser, stack.url("node1"), release_dir) == "verified"
    for card in ("policy", "node1", "node2"):
        assert js(browser, f"return document.getElementById('{card}').dataset.verdict") == "ok"
    assert js(browser, "return document.getElementById('send').disabled") is False
    js(browser, WATCH)
    send(browser, PROMPT, MAX_TOKENS)
    done, text = wait_for(lambda: (r := js(browser, LAST_REPLY)) and r[0] not in ("false", None) and r, 180, "the reply")
    assert done == "true"
    assert text == greedy(stack, PROMPT)
    pieces = js(browser, "return window.__pieces")
    assert len(set(pieces)) > 2 and pieces[-1] == text  # it arrived token by token, not at once
    path = screenshot(browser, "webui-verified.png")
    shutil.copyfile(path, WEBUI / "screenshot.png")


@pytest.mark.slow
def test_the_page_keeps_the_key_from_its_link_and_a_wrong_one_is_refused(stack, browser, release_dir):
    assert open_page(browser, stack.url("node1"), release_dir) == "verified"
    assert "key=" not in js(browser, "return location.href") and "release=" in js(browser, "return location.hash")
    assert js(browser, "return localStorage.getItem('twintee.api-key')") == stack.api_key
    assert js(browser, "return document.getElementById('api-key').value") == stack.api_key
    open_page(browser, stack.url("node1"), release_dir, key="tt-0000000000000000-wrong")
    send(browser, "Hello", 4)
    notice = wait_for(lambda: js(browser, "const n = document.getElementById('notice'); return !n.hidden && n.textContent"),
                      what="the refusal")
    assert "(401)" in notice and "invalid API key" in notice
    js(browser, "localStorage.setItem('twintee.api-key', arguments[0])", stack.api_key)  # as pasting it would


def test_the_stop_button_ends_the_stream(stack, browser, release_dir):
    assert open_page(browser, stack.url("node1"), release_dir) == "verified"
    assert js(browser, "return document.querySelectorAll('.msg.assistant').length") == 0
    send(browser, "Write a long story about a lighthouse keeper.", 400)
    wait_for(lambda: (r := js(browser, LAST_REPLY)) and len(r[1]) > 0, 120, "the first tokens")
    js(browser, "document.getElementById('stop').click()")
    done, _ = wait_for(lambda: (r := js(browser, LAST_REPLY)) and r[0] != "false" and r, 30, "the stop")
    assert done == "stopped"
    assert js(browser, "return document.getElementById('send').disabled") is False


@pytest.mark.slow
def test_the_vendored_hpke_library_matches_rfc9180_in_chromium(stack, browser, release_dir):
    open_page(browser, stack.url("node1"), release_dir)
    script = HPKE_VECTOR_JS + """
const done = arguments[arguments.length - 1];
import("/webui/vendor/hpke-core/esm/mod.js").then((lib) => rfcVector(lib, arguments[0])).then(done, (e) => done(String(e)));"""
    assert browser.execute_async_script(script, RFC9180_A1) == {"enc": RFC9180_A1["enc"], "ct": RFC9180_A1["ct"]}


@pytest.mark.slow
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_tampered_evidence_shows_red_and_nothing_is_sent(stack, browser, release_dir, tamper):
    rewrite, named = TAMPERS[tamper]
    with HostProxy(stack.url("node1")) as host:
        host.rewrite = rewrite
        assert open_page(browser, host.url, release_dir) == "failed"
        status = js(browser, "return document.getElementById('status').textContent")
        assert named in status
        assert js(browser, "return getComputedStyle(document.getElementById('status')).backgroundColor") == RED
        card = named.split(":")[0]
        assert js(browser, f"return document.getElementById('{card}').dataset.verdict") == "failed"
        failing = js(browser, "return [...document.querySelectorAll('.fail-text')].map(e => getComputedStyle(e).color)")
        assert failing and set(failing) == {RED}
        assert js(browser, "return document.getElementById('send').disabled") is True
        send(browser, "this must never leave the page", MAX_TOKENS)  # even a forced submit is refused
        notice = wait_for(lambda: js(browser, "const n = document.getElementById('notice'); return !n.hidden && n.textContent"),
                          30, "the refusal")
        assert notice.startswith("Not sent: attestation failed") and named in notice
        assert "v1/sealed/generate" not in host.paths()
        if tamper == "node1 key swapped":
            shutil.copyfile(screenshot(browser, "webui-tampered.png"), WEBUI / "screenshot-tampered.png")

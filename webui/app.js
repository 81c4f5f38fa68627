// The chat page: verify both nodes with a fresh nonce, then send each prompt sealed to node1's attested key.
import { adoptKeyFromLink, apiKey, setApiKey } from "./apikey.js";
import { bytesToHex, parseLossless, plain } from "./canonical.js";
import { forgetPin, pinnedReleaseKey } from "./pin.js";
import { h, renderNode, renderPolicy, renderStatus } from "./panel.js";
import { openEvents, sealRequest } from "./sealed.js";
import { verifyNode, verifyPolicy } from "./verify.js";

const $ = (id) => document.getElementById(id);
const state = { messages: [], attested: null, busy: false, controller: null };

async function fetchText(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path} answered ${r.status}`);
  return r.text();
}

const unreachable = (role, detail) => ({
  role, ok: false, failed: "reachable", age_s: null, checks: [{ name: "reachable", ok: false, detail }],
});

// Fetches the signed policy and both nodes' evidence for a fresh nonce, checks them, draws the panel.
async function attest() {
  renderStatus($("status"), { state: "checking", text: "Checking attestation…" });
  const nonce = crypto.getRandomValues(new Uint8Array(32));
  const nonceHex = bytesToHex(nonce);
  let policyTree = null, tree = null, fetchError = null;
  try {
    policyTree = parseLossless(await fetchText("/policy"));
    tree = parseLossless(await fetchText(`/attestation?nonce=${nonceHex}`));
  } catch (e) {
    fetchError = e.message;
  }
  const pin = pinnedReleaseKey(policyTree instanceof Map ? plain(policyTree).public_key : null);
  const policy = policyTree ? await verifyPolicy(policyTree, pin.key)
    : { ok: false, checks: [{ name: "policy_signature", ok: false, detail: fetchError }], body: null };
  renderPolicy($("policy"), pin, policy);
  const verdicts = {};
  for (const role of ["node1", "node2"]) {
    const sub = tree instanceof Map ? tree.get(role) : null;
    verdicts[role] = !policy.ok ? unreachable(role, "not checked: the policy failed its signature check")
      : !tree ? unreachable(role, fetchError) : await verifyNode(sub, role, nonce, policy.body);
    const peer = role === "node2" && tree instanceof Map ? plain(tree.get("node1_verdict_on_node2") ?? null) : undefined;
    renderNode($(role), role, verdicts[role], { tree: sub, nonceHex, peer });
  }
  const failure = !policy.ok ? `policy: ${policy.checks[0].name}`
    : ["node1", "node2"].map((r) => (verdicts[r].ok ? null : `${r}: ${verdicts[r].failed}`)).find(Boolean) ?? null;
  const ok = failure === null;
  renderStatus($("status"), ok
    ? { state: "verified", tofu: pin.tofu, text: pin.tofu ? "Verified (release key trusted on first use)" : "Verified: node1 and node2" }
    : { state: "failed", text: `Attestation failed: ${failure}` });
  state.attested = ok ? { key: verdicts.node1.publicKey } : null;
  updateControls();
  return { ok, failure, key: ok ? verdicts.node1.publicKey : null };
}

function updateControls() {
  $("send").disabled = state.busy || !state.attested;
  $("stop").hidden = !state.busy;
  $("prompt").disabled = state.busy;
}

function notice(text, kind = "error") {
  const el = $("notice");
  el.hidden = !text;
  el.className = `notice ${kind}`;
  el.textContent = text ?? "";
}

function addMessage(role, text) {
  const body = h("div", { class: "text" }, text);
  const meta = h("div", { class: "meta" });
  const el = h("article", { class: `msg ${role}` }, body, meta);
  $("messages").append(el);
  el.scrollIntoView({ block: "end" });
  return { el, body, meta };
}

function settings() {
  const temperature = Number($("temperature").value);
  const maxTokens = Math.max(1, Math.min(4096, Math.trunc(Number($("max-tokens").value) || 1)));
  return { temperature, max_tokens: maxTokens };
}

async function postSealed(wire, signal) {
  const r = await fetch("/v1/sealed/generate", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(wire), signal,
  });
  if (!r.ok) {
    const reason = await r.json().then((b) => b.error?.message ?? b.error).catch(() => null);
    throw new Error(`node1 refused the request (${r.status}): ${reason ?? "no reason given"}`);
  }
  return r;
}

// Streams one reply into `view`; -> the text received (all of it, or up to the stop).
async function streamReply(body, key, view) {
  const { wire, key: responseKey } = await sealRequest({ ...body, api_key: apiKey() }, key);
  state.controller = new AbortController();
  const r = await postSealed(wire, state.controller.signal);
  let text = "";
  for await (const ev of openEvents(r, responseKey)) {
    if (ev.error) throw new Error(`generation failed: ${ev.error}`);
    if ("text" in ev) {
      text += ev.text;
      view.body.textContent = text;
      view.el.scrollIntoView({ block: "end" });
    } else if (ev.usage) {
      view.meta.textContent = `${ev.usage.completion_tokens} tokens · ${ev.metrics.tokens_per_sec} tok/s · sealed end to end`;
    }
  }
  return text;
}

async function send(prompt) {
  if (state.busy || !prompt.trim()) return;
  state.busy = true;
  updateControls();
  notice(null);
  try {
    // A fresh nonce before every prompt: the key we seal to must be attested now, not at page load.
    const att = await attest();
    if (!att.ok) {
      notice(`Not sent: attestation failed (${att.failure}). Nothing left this page.`);
      return;
    }
    $("prompt").value = "";
    const user = { role: "user", content: prompt };
    const userView = addMessage("user", prompt);
    const view = addMessage("assistant", "");
    view.el.dataset.done = "false";
    const body = { messages: [...state.messages, user], ...settings(), stream: true };
    let text = "";
    try {
      text = await streamReply(body, att.key, view);
      view.el.dataset.done = "true";
    } catch (e) {
      view.el.dataset.done = e.name === "AbortError" ? "stopped" : "error";
      if (e.name === "AbortError") view.meta.textContent = "stopped";
      else notice(e.message);
    }
    if (view.el.dataset.done !== "error") state.messages.push(user, { role: "assistant", content: text });
    else { view.el.remove(); userView.el.remove(); $("prompt").value = prompt; }
  } finally {
    state.busy = false;
    state.controller = null;
    updateControls();
  }
}

function wire() {
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); send($("prompt").value); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send($("prompt").value); }
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("clear").addEventListener("click", () => { state.messages = []; $("messages").replaceChildren(); notice(null); });
  $("reverify").addEventListener("click", () => attest());
  $("forget").addEventListener("click", () => { forgetPin(); attest(); });
  $("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });
  $("api-key").value = apiKey();
  $("api-key").addEventListener("change", () => setApiKey($("api-key").value));
}

adoptKeyFromLink();
wire();
attest();

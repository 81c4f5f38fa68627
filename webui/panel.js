// Draws the attestation panel: the policy card and one card per node. Text only: never innerHTML.
import { canonical } from "./canonical.js";

const POLICY_CHECKS = ["tee_type", "shape", "role", "measurement", "freshness", "debug", "model"];
const ROLE_TEXT = {
  node1: "tokenizer, chat template, embedding and the first layers; holds the key your prompts are sealed to",
  node2: "the remaining layers, final norm, lm_head and sampling",
};

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("data-")) el.setAttribute(k, v);
    else el[k] = v;
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

const badge = (ok, text) => h("span", { class: `badge ${ok ? "ok" : "bad"}` }, text);
const mark = (ok) => h("span", { class: ok ? "mark ok" : "mark bad", "aria-label": ok ? "passed" : "failed" }, ok ? "✓" : "✗");
const mono = (text) => h("code", { class: "hex" }, text ?? "—");
const row = (label, ...value) => [h("dt", {}, label), h("dd", {}, ...value)];

// A summary of some of a verdict's checks: ok only if every named check ran and passed.
function summary(verdict, names) {
  const cs = verdict.checks.filter((c) => names.includes(c.name));
  const bad = cs.filter((c) => !c.ok);
  const ok = cs.length > 0 && bad.length === 0;
  const text = bad.length ? bad.map((c) => `${c.name}: ${c.detail}`).join("; ") : (cs.length ? "meets the signed policy" : "not checked");
  return [mark(ok), " ", h("span", { class: ok ? "" : "fail-text" }, text)];
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function renderPolicy(el, pin, result) {
  el.replaceChildren(
    h("h3", {}, "Release policy ", badge(result.ok, result.ok ? (pin.tofu ? "trusted on first use" : "verified") : "FAILED")),
    h("dl", {}, row("Release key", mono(pin.key || "none"), h("div", { class: "fine" }, pin.how)),
      row("Signature", ...result.checks.map((c) => [mark(c.ok), " ", h("span", { class: c.ok ? "" : "fail-text" }, c.detail)])),
      result.body ? row("Model", `${result.body.model?.model_id} v${result.body.model?.version}`) : null),
  );
  el.dataset.verdict = result.ok ? "ok" : "failed";
}

export function renderNode(el, role, verdict, { tree, nonceHex, peer }) {
  const ev = verdict.evidence ?? {};
  const model = verdict.model ?? {};
  const signature = verdict.checks.find((c) => c.name === "signature");
  const rd = verdict.checks.find((c) => c.name === "report_data");
  const title = verdict.ok ? "verified" : `FAILED: ${verdict.failed}`;
  const layers = Array.isArray(model.layers) ? `[${model.layers[0]}, ${model.layers[1]})` : "—";
  el.replaceChildren(
    h("h3", {}, `${role} `, badge(verdict.ok, title)),
    h("p", { class: "fine" }, ROLE_TEXT[role]),
    h("dl", {},
      row("TEE type", ev.tee_type === "simulated" ? "simulated (software stand-in: no hardware protection)" : (ev.tee_type ?? "—")),
      row("Measurement", mono(ev.measurement)),
      row("Components", ...["code", "manifest", "config"].map((c) => h("div", {}, `${c}: `, mono(ev.components?.[c])))),
      row("Report data", mono(ev.report_data), h("div", { class: "fine" },
        `= SHA-512("twintee/report-data/v2" ‖ "client-attestation" ‖ ${role}'s key ${(verdict.publicKey ?? "?").slice(0, 16)}… ‖ this page's nonce ${(nonceHex ?? "").slice(0, 16)}…)`),
      rd ? h("div", {}, mark(rd.ok), " ", h("span", { class: rd.ok ? "" : "fail-text" }, rd.detail)) : null),
      row("Signature chain", signature ? [mark(signature.ok), " ", h("span", { class: signature.ok ? "" : "fail-text" }, signature.detail)] : "not checked"),
      row("Policy", ...summary(verdict, POLICY_CHECKS)),
      row("Evidence age", verdict.age_s === null ? "—" : `${verdict.age_s.toFixed(1)} s`),
      row("Model", `${model.model_id ?? "—"} v${model.version ?? "—"}`),
      row("Layers", layers),
      row(role === "node1" ? "HPKE key" : "Public key", mono(verdict.publicKey)),
      peer !== undefined ? row("node1's check", peer?.ok ? [mark(true), " node1 verified node2 before linking"]
        : [mark(false), h("span", { class: "fail-text" }, ` node1 has no verified link to node2${peer?.failed ? ` (${peer.failed})` : ""}`)]) : null),
    h("details", {}, h("summary", {}, "All checks"),
      h("ul", { class: "checks" }, verdict.checks.map((c) =>
        h("li", { class: c.ok ? "" : "fail-text", "data-check": c.name }, mark(c.ok), ` ${c.name}: ${c.detail}`)))),
    h("button", { type: "button", class: "link", onclick: () => download(`twintee-${role}-evidence-${(nonceHex ?? "").slice(0, 8)}.json`, tree ? canonical(tree) : "{}") },
      "Download raw evidence"),
  );
  el.dataset.verdict = verdict.ok ? "ok" : "failed";
  el.dataset.failed = verdict.failed ?? "";
}

export function renderStatus(el, result) {
  el.dataset.state = result.state;
  el.className = `badge ${result.state === "verified" ? (result.tofu ? "warn" : "ok") : result.state === "failed" ? "bad" : "checking"}`;
  el.textContent = result.text;
}

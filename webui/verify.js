// The page's own appraisal of both nodes (WebCrypto), mirroring attestation/verify.py's named checks.
//
// Chain for the SIMULATED TEE: pinned release key -> signed policy -> its simulated root key ->
// platform certificate -> evidence signature; report_data must bind the node's key to this page's nonce.
import { RawNumber, bytesToHex, canonicalBytes, hexToBytes, pick, plain } from "./canonical.js";

const BODY_FIELDS = ["version", "tee_type", "role", "measurement", "components", "report_data", "issued_at", "debug"];
const SIMULATED_FIELDS = ["platform_certificate", "signature"];
const COMPONENTS = ["code", "manifest", "config"];
const REPORT_TAG = "twintee/report-data/v2";
// The page only ever checks evidence a node made for a client (attestation/binding.py CLIENT_ATTESTATION).
const PURPOSE = "client-attestation";
const MEASUREMENT_TAG = "twintee/measurement/v1";
const MAX_CLOCK_SKEW_S = 30; // as the Python verifier: a little drift between clocks is normal
const enc = new TextEncoder();

const check = (name, ok, detail) => ({ name, ok: Boolean(ok), detail });
const short = (hex) => (typeof hex === "string" ? `${hex.slice(0, 12)}…` : "?");
const isHex = (v, n) => typeof v === "string" && v.length === 2 * n && /^[0-9a-f]+$/i.test(v);

async function ed25519Verify(publicHex, signatureHex, bytes) {
  try {
    const key = await crypto.subtle.importKey("raw", hexToBytes(publicHex), { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, hexToBytes(signatureHex), bytes);
  } catch {
    return false; // a malformed key or signature fails the check, never the page
  }
}

async function digestHex(alg, parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const buf = new Uint8Array(total);
  let at = 0;
  for (const p of parts) { buf.set(p, at); at += p.length; }
  return bytesToHex(await crypto.subtle.digest(alg, buf));
}

const u32 = (n) => Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);

// SHA-512(tag || len(purpose) || purpose || len(key) || key || len(nonce) || nonce), as attestation/binding.py.
export const reportData = (publicKey, nonce) => {
  const purpose = enc.encode(PURPOSE);
  return digestHex("SHA-512", [enc.encode(REPORT_TAG), u32(purpose.length), purpose, u32(publicKey.length), publicKey,
    u32(nonce.length), nonce]);
};

// -> {ok, checks, body}: the policy document's signature against the pinned release key.
export async function verifyPolicy(signedTree, pinnedKeyHex) {
  const signed = plain(signedTree);
  if (!(signedTree instanceof Map) || !(signedTree.get("body") instanceof Map)) {
    return { ok: false, checks: [check("policy_signature", false, "the policy is not a signed document")], body: null };
  }
  const good = await ed25519Verify(pinnedKeyHex, signed.signature, canonicalBytes(signedTree.get("body")));
  const detail = good ? `signed by the pinned release key ${short(pinnedKeyHex)}`
    : `not signed by the pinned release key ${short(pinnedKeyHex)}`;
  return { ok: good, checks: [check("policy_signature", good, detail)], body: good ? signed.body : null };
}

function shape(ev) {
  if (!(ev instanceof Map)) return "evidence must be a JSON object";
  const want = [...BODY_FIELDS, ...SIMULATED_FIELDS];
  const missing = want.filter((k) => !ev.has(k));
  const extra = [...ev.keys()].filter((k) => !want.includes(k));
  if (missing.length || extra.length) return `fields differ: missing [${missing}], extra [${extra}]`;
  const e = plain(ev);
  if (!isHex(e.measurement, 32) || !isHex(e.report_data, 64)) return "measurement or report_data is not hex of the right size";
  if (!(ev.get("issued_at") instanceof RawNumber) || typeof e.debug !== "boolean") return "issued_at or debug has the wrong type";
  if (!e.components || COMPONENTS.some((c) => !isHex(e.components[c], 32))) return "components must be three 32-byte digests";
  return null;
}

async function signatureChain(ev, policy) {
  const root = policy.simulated_root_public_key;
  if (!isHex(root, 32)) return check("signature", false, "the policy pins no simulated root");
  const cert = ev.get("platform_certificate");
  const certBody = cert instanceof Map ? cert.get("body") : null;
  const certOk = certBody instanceof Map &&
    await ed25519Verify(root, plain(cert).signature, canonicalBytes(certBody));
  if (!certOk) return check("signature", false, "platform certificate is not signed by the pinned simulated root");
  const platform = plain(certBody).platform_public_key;
  const evOk = await ed25519Verify(platform, plain(ev).signature, canonicalBytes(pick(ev, BODY_FIELDS)));
  return evOk
    ? check("signature", true, `pinned simulated root ${short(root)} → platform key ${short(platform)} → evidence`)
    : check("signature", false, "report signature does not verify with the certified platform key");
}

async function measurementCheck(e, policy) {
  const ref = policy.roles?.[e.role];
  if (!ref) return check("measurement", false, `the policy has no reference for ${e.role}`);
  const parts = COMPONENTS.map((c) => hexToBytes(e.components[c]));
  const combined = await digestHex("SHA-256", [enc.encode(MEASUREMENT_TAG), ...parts]);
  if (combined !== e.measurement) return check("measurement", false, "measurement does not match its own components");
  const differing = COMPONENTS.filter((c) => ref.components[c] !== e.components[c]);
  if (differing.length || ref.measurement !== e.measurement) {
    return check("measurement", false, `${e.role} differs from the signed reference in: ${differing.join(", ") || "measurement"}`);
  }
  return check("measurement", true, "equals the release's signed reference value");
}

// report_data must be SHA-512 of the served key and OUR nonce: the key we will seal to, attested just now.
async function bindingCheck(publicKeyHex, nonce, reported, checks) {
  let expected = "";
  try { expected = await reportData(hexToBytes(publicKeyHex), nonce); } catch { /* a bad key fails below */ }
  const ok = expected !== "" && expected === reported;
  checks.push(check("report_data", ok, ok ? `binds key ${short(publicKeyHex)} to this page's nonce ${short(bytesToHex(nonce))}`
    : "not bound to the served key and this page's nonce"));
  return { expected, publicKey: publicKeyHex, nonce: bytesToHex(nonce) };
}

function modelCheck(model, policy) {
  const want = policy.model ?? {};
  const ok = model?.model_id === want.model_id && Number.isInteger(model?.version) && model.version >= policy.min_model_version;
  return check("model", ok, `${model?.model_id} v${model?.version}; policy: ${want.model_id} v≥${policy.min_model_version}`);
}

// -> verdict {ok, failed, checks, age_s, evidence (plain), publicKey, model, reportData} for one node.
export async function verifyNode(nodeTree, role, nonce, policy, nowS = Date.now() / 1000) {
  const node = nodeTree instanceof Map ? plain(nodeTree) : {};
  const ev = nodeTree instanceof Map ? nodeTree.get("evidence") : null;
  const verdict = { role, checks: [], age_s: null, evidence: ev ? plain(ev) : null, publicKey: node.public_key, model: node.model };
  const done = () => {
    verdict.failed = verdict.checks.find((c) => !c.ok)?.name ?? null;
    verdict.ok = verdict.failed === null;
    return verdict;
  };
  if (!ev) { verdict.checks.push(check("reachable", false, node.error ?? "no evidence")); return done(); }
  const type = ev instanceof Map ? ev.get("tee_type") : undefined;
  const allowed = (policy.allowed_tee_types ?? []).includes(type) && type === "simulated";
  verdict.checks.push(check("tee_type", allowed, allowed ? "simulated (allowed by the policy)"
    : `${type}: this page checks only simulated evidence; use \`python -m client chat\``));
  if (!allowed) return done();
  const bad = shape(ev);
  verdict.checks.push(check("shape", !bad, bad ?? "well-formed evidence envelope"));
  if (bad) return done();
  const e = plain(ev);
  verdict.checks.push(await signatureChain(ev, policy));
  verdict.checks.push(check("role", e.role === role && node.role === role, `evidence is for ${e.role}, expected ${role}`));
  verdict.checks.push(await measurementCheck(e, policy));
  verdict.age_s = nowS - e.issued_at;
  const limit = policy.max_evidence_age_s;
  verdict.checks.push(check("freshness", verdict.age_s >= -MAX_CLOCK_SKEW_S && verdict.age_s <= limit,
    `evidence age ${verdict.age_s.toFixed(1)} s, limit ${limit} s`));
  verdict.checks.push(check("debug", e.debug === false, e.debug ? "debug build" : "not a debug build"));
  verdict.reportData = await bindingCheck(node.public_key, nonce, e.report_data, verdict.checks);
  verdict.checks.push(modelCheck(node.model, policy));
  return done();
}

// The page's half of node1's sealed format (shared/sealed_protocol.py documents it and owns the Python
// halves): HPKE out, AES-GCM events back. tests/test_sealed_protocol.py checks these constants equal its.
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "./vendor/hpke-core/esm/mod.js";
import { bytesToHex, hexToBytes } from "./canonical.js";

const INFO = new TextEncoder().encode("twintee/sealed-generate/v1");
const EVENT_AD = new TextEncoder().encode("twintee/sealed-event/v1");
const KEY_BYTES = 32;
const INDEX_BYTES = 8;
const NONCE_BYTES = 12;
const DONE = "[DONE]";
const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

export class SealedStreamError extends Error {}

// -> {wire: {enc, ciphertext}, key: CryptoKey}; `body` is a /generate body, node1Key its attested X25519 key.
export async function sealRequest(body, node1KeyHex) {
  const raw = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
  const recipientPublicKey = await suite.kem.deserializePublicKey(hexToBytes(node1KeyHex).buffer);
  const sender = await suite.createSenderContext({ recipientPublicKey, info: INFO });
  const plain = new TextEncoder().encode(JSON.stringify({ request: body, response_key: bytesToHex(raw) }));
  raw.fill(0); // the CryptoKey holds it now
  const ct = await sender.seal(plain);
  return { wire: { enc: bytesToHex(sender.enc), ciphertext: bytesToHex(ct) }, key };
}

function eventAd(index) {
  const ad = new Uint8Array(EVENT_AD.length + INDEX_BYTES);
  ad.set(EVENT_AD);
  new DataView(ad.buffer).setBigUint64(EVENT_AD.length, BigInt(index)); // big-endian
  return ad;
}

async function openEvent(key, index, hex) {
  try {
    const raw = hexToBytes(hex);
    const iv = raw.slice(0, NONCE_BYTES);
    const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: eventAd(index) }, key, raw.slice(NONCE_BYTES));
    return new TextDecoder().decode(pt);
  } catch {
    throw new SealedStreamError(`event ${index} does not open: dropped, reordered or altered`);
  }
}

// The `data:` payloads of a fetch Response's text/event-stream, as they arrive.
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value ?? new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
    }
    if (done) return;
  }
}

// Yields each opened event (token, summary or error) in order; throws if the stream ends unsealed.
export async function* openEvents(response, key) {
  let index = 0;
  for await (const data of sseData(response)) {
    const payload = await openEvent(key, index, data);
    index += 1;
    if (payload === DONE) return;
    yield JSON.parse(payload);
  }
  throw new SealedStreamError(`the reply ended after ${index} events without its sealed end`);
}

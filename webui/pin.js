// Which release key this browser trusts to sign the policy, and how it came to trust it.
//
// TRUST LIMITS, honestly: node1 serves this page, so a host that controls node1's machine could serve a
// page that skips every check. The page's files are part of node1's measured code, but a page cannot
// check the code that is running it. The pin below protects a returning visitor (the key stays in this
// browser) and anyone who opens a link carrying #release=<key> from a trusted place (the fragment is never
// sent to the server). A first visit without the fragment trusts the key the server offers (TOFU) and
// keeps saying so until a #release= link confirms it. For a check that does not depend on the server's
// page, use `python -m client chat` with the release directory's keys/release.pub.
const STORE = "twintee.releaseKey";
const HEX32 = /^[0-9a-f]{64}$/;

function stored() {
  try {
    const pin = JSON.parse(localStorage.getItem(STORE));
    return pin && HEX32.test(pin.key) ? pin : null;
  } catch {
    return null;
  }
}

const save = (key, source) => localStorage.setItem(STORE, JSON.stringify({ key, source }));

// -> {key, how, tofu}: the pinned key (hex), or the served one on first use.
export function pinnedReleaseKey(servedKeyHex) {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("release")?.toLowerCase();
  if (fromLink && HEX32.test(fromLink)) {
    save(fromLink, "link");
    return { key: fromLink, how: "pinned by the link you opened (#release=…)", tofu: false };
  }
  const pin = stored();
  if (pin?.source === "link") return { key: pin.key, how: "pinned in this browser from a #release= link", tofu: false };
  if (pin) return { key: pin.key, how: "trusted on first use in this browser: compare it with keys/release.pub", tofu: true };
  if (typeof servedKeyHex === "string" && HEX32.test(servedKeyHex)) {
    save(servedKeyHex, "tofu");
    return { key: servedKeyHex, how: "first use: trusted the key node1 served; compare it with keys/release.pub", tofu: true };
  }
  return { key: "", how: "no release key to pin", tofu: false };
}

export function forgetPin() {
  localStorage.removeItem(STORE);
}

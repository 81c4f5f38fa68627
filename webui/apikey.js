// The caller's API key: adopted once from a #key=… link (then removed from the address bar and history,
// as Jupyter's token URL is), kept in this browser's localStorage, pasted by a person in Settings, and sent
// only inside the sealed request, so the host never sees it.
const STORE = "twintee.api-key";

export function adoptKeyFromLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (!key) return;
  localStorage.setItem(STORE, key);
  params.delete("key");
  const rest = params.toString();  // keeps #release=… for pin.js
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

export const apiKey = () => localStorage.getItem(STORE) ?? "";

export function setApiKey(key) {
  const k = key.trim();
  if (k) localStorage.setItem(STORE, k);
  else localStorage.removeItem(STORE);
}

// Exact bytes for signature checks: a JSON parser that keeps each number's text, and Python's canonical JSON.
//
// The nodes sign json.dumps(body, sort_keys=True, separators=(",", ":")) (ensure_ascii on). JSON.parse
// would turn 300.0 into 300 and break the signature, so numbers stay as the text Python wrote.

export class RawNumber {
  constructor(text) { this.text = text; }
}

const WS = /[ \t\n\r]*/y;
const NUM = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const STR = /"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/y;
const LIT = /true|false|null/y;

class Parser {
  constructor(text) { this.text = text; this.at = 0; }

  fail(what) { throw new SyntaxError(`JSON: ${what} at ${this.at}`); }

  match(re) {
    re.lastIndex = this.at;
    const m = re.exec(this.text);
    if (m) this.at = re.lastIndex;
    return m ? m[0] : null;
  }

  value() {
    this.match(WS);
    const c = this.text[this.at];
    if (c === "{") return this.container("}", new Map(), (out) => {
      this.match(WS);
      const key = JSON.parse(this.match(STR) ?? this.fail("expected a key"));
      this.match(WS);
      if (this.text[this.at++] !== ":") this.fail("expected ':'");
      out.set(key, this.value());
    });
    if (c === "[") return this.container("]", [], (out) => out.push(this.value()));
    if (c === '"') return JSON.parse(this.match(STR) ?? this.fail("bad string"));
    const lit = this.match(LIT);
    if (lit !== null) return JSON.parse(lit);
    return new RawNumber(this.match(NUM) ?? this.fail("unexpected character"));
  }

  // An object or array: `item(out)` reads one member; members are separated by commas.
  container(close, out, item) {
    this.at++;
    this.match(WS);
    if (this.text[this.at] === close) { this.at++; return out; }
    for (;;) {
      item(out);
      this.match(WS);
      const c = this.text[this.at++];
      if (c === close) return out;
      if (c !== ",") this.fail(`expected ',' or '${close}'`);
    }
  }
}

// -> a tree of Map (objects), Array, string, RawNumber, boolean and null; throws SyntaxError.
export function parseLossless(text) {
  const p = new Parser(text);
  const tree = p.value();
  p.match(WS);
  if (p.at !== text.length) p.fail("trailing data");
  return tree;
}

const SHORT = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f" };

// Python's ensure_ascii escaping: everything outside ' '..'~' becomes \uXXXX (UTF-16 units, lowercase).
function pyString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    const code = s.charCodeAt(i);
    if (SHORT[ch]) out += SHORT[ch];
    else if (code < 0x20 || code > 0x7e) out += "\\u" + code.toString(16).padStart(4, "0");
    else out += ch;
  }
  return out + '"';
}

// Keys compare by code point as Python's sorted() does (JS's default sort compares UTF-16 units).
const byCodePoint = (a, b) => {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
};

export function canonical(tree) {
  if (tree === null) return "null";
  if (tree === true || tree === false) return String(tree);
  if (tree instanceof RawNumber) return tree.text;
  if (typeof tree === "string") return pyString(tree);
  if (Array.isArray(tree)) return "[" + tree.map(canonical).join(",") + "]";
  if (tree instanceof Map) {
    const keys = [...tree.keys()].sort(byCodePoint);
    return "{" + keys.map((k) => pyString(k) + ":" + canonical(tree.get(k))).join(",") + "}";
  }
  throw new TypeError("canonical: not a lossless JSON tree");
}

export const canonicalBytes = (tree) => new TextEncoder().encode(canonical(tree));

// The tree as ordinary JS values, for reading fields (never for signature checks).
export function plain(tree) {
  if (tree instanceof RawNumber) return Number(tree.text);
  if (Array.isArray(tree)) return tree.map(plain);
  if (tree instanceof Map) return Object.fromEntries([...tree].map(([k, v]) => [k, plain(v)]));
  return tree;
}

// Only these keys of a Map, in a new Map (missing keys are left out; the shape check names them).
export function pick(tree, keys) {
  return new Map(keys.filter((k) => tree.has(k)).map((k) => [k, tree.get(k)]));
}

export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) throw new TypeError("not hex");
  return Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
}

export const bytesToHex = (bytes) =>
  Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

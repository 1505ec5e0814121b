// A small JSON reader and writer: enough for the JSON the SPEAR host sends (objects, arrays,
// strings, unsigned integers, booleans, null) and for refusing anything malformed.
//
// AssemblyScript has no exceptions, so the parser records the first error and returns null.

export const KIND_NULL: i32 = 0;
export const KIND_BOOL: i32 = 1;
export const KIND_NUMBER: i32 = 2;
export const KIND_STRING: i32 = 3;
export const KIND_ARRAY: i32 = 4;
export const KIND_OBJECT: i32 = 5;

export class Json {
  kind: i32 = KIND_NULL;
  bool: bool = false;
  /** For numbers: true when the text is a non-negative integer that fits a u64. */
  isU64: bool = false;
  u64: u64 = 0;
  /** For numbers: true for a plain integer (no fraction, no exponent), any sign or size. */
  isInteger: bool = false;
  negative: bool = false;
  str: string = "";
  items: Array<Json> = new Array<Json>();
  keys: Array<string> = new Array<string>();

  /** The value of `key` in an object (the last one when repeated), or null. */
  get(key: string): Json | null {
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }
}

export class Parser {
  bytes: Uint8Array;
  pos: i32 = 0;
  error: string | null = null;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  /** Parse one whole document (only whitespace may follow the value). */
  document(): Json | null {
    const v = this.value(0);
    if (v === null) return null;
    this.ws();
    if (this.pos < this.bytes.length) return this.fail("trailing characters");
    return v;
  }

  private fail(message: string): Json | null {
    if (this.error === null) this.error = message + " at byte " + this.pos.toString();
    return null;
  }

  private ws(): void {
    while (this.pos < this.bytes.length) {
      const c = this.bytes[this.pos];
      if (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) this.pos++;
      else break;
    }
  }

  private literal(word: string): bool {
    const n = word.length;
    if (this.pos + n > this.bytes.length) return false;
    for (let i = 0; i < n; i++) {
      if (<i32>this.bytes[this.pos + i] != word.charCodeAt(i)) return false;
    }
    this.pos += n;
    return true;
  }

  private value(depth: i32): Json | null {
    if (depth > 64) return this.fail("nesting too deep");
    this.ws();
    if (this.pos >= this.bytes.length) return this.fail("unexpected end of input");
    const c = this.bytes[this.pos];
    const v = new Json();
    if (c == 0x7b /* { */) {
      v.kind = KIND_OBJECT;
      this.pos++;
      this.ws();
      if (this.pos < this.bytes.length && this.bytes[this.pos] == 0x7d) {
        this.pos++;
        return v;
      }
      while (true) {
        this.ws();
        if (this.pos >= this.bytes.length || this.bytes[this.pos] != 0x22) {
          return this.fail("expected a string key");
        }
        const key = this.string();
        if (key === null) return null;
        this.ws();
        if (this.pos >= this.bytes.length || this.bytes[this.pos] != 0x3a) {
          return this.fail("expected `:`");
        }
        this.pos++;
        const item = this.value(depth + 1);
        if (item === null) return null;
        v.keys.push(key);
        v.items.push(item);
        this.ws();
        if (this.pos >= this.bytes.length) return this.fail("unexpected end of input");
        const d = this.bytes[this.pos++];
        if (d == 0x7d) return v;
        if (d != 0x2c) return this.fail("expected `,` or `}`");
      }
    }
    if (c == 0x5b /* [ */) {
      v.kind = KIND_ARRAY;
      this.pos++;
      this.ws();
      if (this.pos < this.bytes.length && this.bytes[this.pos] == 0x5d) {
        this.pos++;
        return v;
      }
      while (true) {
        const item = this.value(depth + 1);
        if (item === null) return null;
        v.items.push(item);
        this.ws();
        if (this.pos >= this.bytes.length) return this.fail("unexpected end of input");
        const d = this.bytes[this.pos++];
        if (d == 0x5d) return v;
        if (d != 0x2c) return this.fail("expected `,` or `]`");
      }
    }
    if (c == 0x22 /* " */) {
      const s = this.string();
      if (s === null) return null;
      v.kind = KIND_STRING;
      v.str = s;
      return v;
    }
    if (c == 0x74 /* t */ && this.literal("true")) {
      v.kind = KIND_BOOL;
      v.bool = true;
      return v;
    }
    if (c == 0x66 /* f */ && this.literal("false")) {
      v.kind = KIND_BOOL;
      return v;
    }
    if (c == 0x6e /* n */ && this.literal("null")) {
      return v;
    }
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number(v);
    return this.fail("unexpected character");
  }

  private number(v: Json): Json | null {
    v.kind = KIND_NUMBER;
    const b = this.bytes;
    if (b[this.pos] == 0x2d) {
      v.negative = true;
      this.pos++;
    }
    const start = this.pos;
    let value: u64 = 0;
    let overflow = false;
    while (this.pos < b.length && b[this.pos] >= 0x30 && b[this.pos] <= 0x39) {
      const d = <u64>(b[this.pos] - 0x30);
      if (value > (U64.MAX_VALUE - d) / 10) overflow = true;
      else value = value * 10 + d;
      this.pos++;
    }
    const digits = this.pos - start;
    if (digits == 0) return this.fail("expected a digit");
    if (digits > 1 && b[start] == 0x30) return this.fail("leading zero in a number");
    let integer = true;
    if (this.pos < b.length && b[this.pos] == 0x2e) {
      integer = false;
      this.pos++;
      const f = this.pos;
      while (this.pos < b.length && b[this.pos] >= 0x30 && b[this.pos] <= 0x39) this.pos++;
      if (this.pos == f) return this.fail("expected a digit");
    }
    if (this.pos < b.length && (b[this.pos] == 0x65 || b[this.pos] == 0x45)) {
      integer = false;
      this.pos++;
      if (this.pos < b.length && (b[this.pos] == 0x2b || b[this.pos] == 0x2d)) this.pos++;
      const e = this.pos;
      while (this.pos < b.length && b[this.pos] >= 0x30 && b[this.pos] <= 0x39) this.pos++;
      if (this.pos == e) return this.fail("expected a digit");
    }
    v.isInteger = integer;
    v.isU64 = integer && !overflow && (!v.negative || value == 0);
    v.u64 = v.isU64 ? value : 0;
    return v;
  }

  private hex4(): i32 {
    if (this.pos + 4 > this.bytes.length) return -1;
    let n: i32 = 0;
    for (let i = 0; i < 4; i++) {
      const c = <i32>this.bytes[this.pos + i];
      let d: i32;
      if (c >= 0x30 && c <= 0x39) d = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
      else return -1;
      n = (n << 4) | d;
    }
    this.pos += 4;
    return n;
  }

  /** A string starting at the opening quote; null on error. */
  private string(): string | null {
    const b = this.bytes;
    this.pos++; // opening quote
    let out = new Array<u8>();
    let plain = this.pos; // start of a run without escapes
    while (true) {
      if (this.pos >= b.length) {
        this.fail("unterminated string");
        return null;
      }
      const c = b[this.pos];
      if (c == 0x22) {
        if (out.length == 0) {
          const s = String.UTF8.decode(b.slice(plain, this.pos).buffer);
          this.pos++;
          return s;
        }
        for (let i = plain; i < this.pos; i++) out.push(b[i]);
        this.pos++;
        const bytes = new Uint8Array(out.length);
        for (let i = 0; i < out.length; i++) bytes[i] = out[i];
        return String.UTF8.decode(bytes.buffer);
      }
      if (c < 0x20) {
        this.fail("control character in string");
        return null;
      }
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      // An escape: flush the plain run, then decode.
      for (let i = plain; i < this.pos; i++) out.push(b[i]);
      this.pos++;
      if (this.pos >= b.length) {
        this.fail("unterminated string");
        return null;
      }
      const e = b[this.pos++];
      if (e == 0x22 || e == 0x5c || e == 0x2f) out.push(e);
      else if (e == 0x62) out.push(0x08);
      else if (e == 0x66) out.push(0x0c);
      else if (e == 0x6e) out.push(0x0a);
      else if (e == 0x72) out.push(0x0d);
      else if (e == 0x74) out.push(0x09);
      else if (e == 0x75) {
        let cp = this.hex4();
        if (cp < 0) {
          this.fail("bad \\u escape");
          return null;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
          // A high surrogate must be followed by an escaped low surrogate.
          if (this.pos + 1 < b.length && b[this.pos] == 0x5c && b[this.pos + 1] == 0x75) {
            this.pos += 2;
            const lo = this.hex4();
            if (lo < 0xdc00 || lo > 0xdfff) {
              this.fail("bad surrogate pair");
              return null;
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else {
            cp = 0xfffd;
          }
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
          cp = 0xfffd;
        }
        pushUtf8(out, cp);
      } else {
        this.fail("bad escape");
        return null;
      }
      plain = this.pos;
    }
  }
}

function pushUtf8(out: Array<u8>, cp: i32): void {
  if (cp < 0x80) {
    out.push(<u8>cp);
  } else if (cp < 0x800) {
    out.push(<u8>(0xc0 | (cp >> 6)));
    out.push(<u8>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push(<u8>(0xe0 | (cp >> 12)));
    out.push(<u8>(0x80 | ((cp >> 6) & 0x3f)));
    out.push(<u8>(0x80 | (cp & 0x3f)));
  } else {
    out.push(<u8>(0xf0 | (cp >> 18)));
    out.push(<u8>(0x80 | ((cp >> 12) & 0x3f)));
    out.push(<u8>(0x80 | ((cp >> 6) & 0x3f)));
    out.push(<u8>(0x80 | (cp & 0x3f)));
  }
}

/** `s` as a JSON string literal, quotes included. */
export function quote(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c == 0x22) out += '\\"';
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else if (c < 0x20) {
      const h = c.toString(16);
      out += "\\u" + "0000".slice(0, 4 - h.length) + h;
    } else out += String.fromCharCode(c);
  }
  return out + '"';
}

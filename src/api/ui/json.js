// A JSON reader that remembers where every value is, so that an error's JSON pointer
// (RFC 6901, as problem+json gives it) can be shown at its line in the spec editor.

export class JsonSyntaxError extends Error {
  constructor(message, offset, text) {
    super(message);
    this.offset = offset;
    Object.assign(this, lineCol(text, offset));
  }
}

/** One-based line and column of a character offset. */
export function lineCol(text, offset) {
  let line = 1;
  let start = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      start = i + 1;
    }
  }
  return { line, col: offset - start + 1 };
}

const escape = (key) => String(key).replace(/~/g, '~0').replace(/\//g, '~1');

/**
 * Parses `text`; returns {value, spans} where spans maps each JSON pointer to
 * {start, end, keyStart} (character offsets of the value, and of its key in an object).
 */
export function parseWithSpans(text) {
  const spans = new Map();
  let i = 0;
  const fail = (msg) => {
    throw new JsonSyntaxError(msg, i, text);
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const str = () => {
    const m = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/.exec(text.slice(i));
    if (!m) fail('unterminated or invalid string');
    i += m[0].length;
    return JSON.parse(m[0]);
  };
  const value = (ptr, keyStart) => {
    ws();
    const start = i;
    let v;
    const c = text[i];
    if (c === '{') {
      i++;
      v = {};
      ws();
      if (text[i] === '}') i++;
      else {
        for (;;) {
          ws();
          if (text[i] !== '"') fail('expected a quoted key');
          const ks = i;
          const k = str();
          ws();
          if (text[i] !== ':') fail("expected ':' after the key");
          i++;
          v[k] = value(`${ptr}/${escape(k)}`, ks);
          ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i] === '}') { i++; break; }
          fail("expected ',' or '}'");
        }
      }
    } else if (c === '[') {
      i++;
      v = [];
      ws();
      if (text[i] === ']') i++;
      else {
        for (;;) {
          v.push(value(`${ptr}/${v.length}`));
          ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i] === ']') { i++; break; }
          fail("expected ',' or ']'");
        }
      }
    } else if (c === '"') {
      v = str();
    } else {
      const m = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i));
      if (!m) fail(i >= text.length ? 'unexpected end of the text' : `unexpected '${c}'`);
      i += m[0].length;
      v = JSON.parse(m[0]);
    }
    spans.set(ptr, { start, end: i, keyStart: keyStart ?? start });
    return v;
  };
  const v = value('');
  ws();
  if (i < text.length) fail('unexpected text after the JSON value');
  return { value: v, spans };
}

/** The span of `pointer`, or of its nearest ancestor that exists in the text. */
export function locate(spans, pointer) {
  let p = pointer;
  for (;;) {
    if (spans.has(p)) return { pointer: p, ...spans.get(p) };
    if (p === '') return null;
    p = p.slice(0, p.lastIndexOf('/'));
  }
}

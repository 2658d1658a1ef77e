// Small DOM helpers shared by the views.

/** An HTML element with attributes (on* as listeners) and children. */
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

/** Text with `**bold**` shown as bold (the grader's feedback), everything else as text. */
export function markdownBold(text) {
  const span = h('span');
  String(text)
    .split(/\*\*/)
    .forEach((part, k) => span.append(k % 2 ? h('strong', {}, part) : document.createTextNode(part)));
  return span;
}

/** A labelled control: <label>text <input ...></label>. */
export function field(label, control, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), control, hint ? h('small', {}, hint) : null);
}

/** Offers `text` as a file download. */
export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Replaces the children of `el`. */
export function show(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

/** Ranges [[a, b], ...] as text: "1–10, 15–20". */
export function rangesText(ranges) {
  if (!ranges || !ranges.length) return 'none';
  return ranges.map(([a, b]) => (a === b ? `${a}` : `${a}–${b}`)).join(', ');
}

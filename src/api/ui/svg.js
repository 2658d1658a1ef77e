// SVG drawn from the API's numbers: line charts (linear or log axis) and horizontal bars.
// Series differ by marker shape and dash pattern as well as colour, and every chart has a
// text legend, so colour never carries meaning alone.

const NS = 'http://www.w3.org/2000/svg';

/** An SVG element with attributes and children. */
export function s(tag, attrs = {}, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export const COLOURS = ['#1f5fa8', '#c2410c', '#15803d', '#7e22ce', '#a16207', '#be185d'];
const DASHES = [null, '6 3', '2 3', '8 3 2 3', '1 2', '4 4'];
const MARKERS = ['circle', 'square', 'triangle', 'diamond', 'cross', 'circle'];

function marker(kind, x, y, colour) {
  const r = 4;
  switch (kind) {
    case 'square':
      return s('rect', { x: x - r, y: y - r, width: 2 * r, height: 2 * r, fill: colour });
    case 'triangle':
      return s('path', { d: `M${x},${y - r - 1}L${x + r + 1},${y + r}L${x - r - 1},${y + r}Z`, fill: colour });
    case 'diamond':
      return s('path', { d: `M${x},${y - r - 1}L${x + r + 1},${y}L${x},${y + r + 1}L${x - r - 1},${y}Z`, fill: colour });
    case 'cross':
      return s('path', { d: `M${x - r},${y - r}L${x + r},${y + r}M${x - r},${y + r}L${x + r},${y - r}`, stroke: colour, 'stroke-width': 2 });
    default:
      return s('circle', { cx: x, cy: y, r, fill: colour });
  }
}

/** The chart in a <figure> with a text legend: items [[swatch svg, text], ...]. */
function figure(svg, items) {
  const wrap = document.createElement('figure');
  wrap.className = 'chart-wrap';
  const legend = document.createElement('figcaption');
  legend.className = 'legend';
  for (const [swatch, text] of items) {
    const item = document.createElement('span');
    item.append(swatch, ` ${text}`);
    legend.append(item);
  }
  wrap.append(svg, legend);
  return wrap;
}

/** A readable number: integers with thousands separators, others to 4 significant digits. */
export function fmt(v) {
  if (v === null || v === undefined) return '–';
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return v.toLocaleString('en-US');
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e6 ? String(Number(v.toPrecision(4))) : v.toExponential(3);
}

function ticks(lo, hi, log, integers = false) {
  if (log) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
    const step = Math.ceil(out.length / 8);
    return out.filter((_, k) => k % step === 0);
  }
  if (hi === lo) return [lo];
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= raw);
  if (integers) step = Math.max(1, Math.round(step));
  const out = [];
  // multiples of the step, so that zero is exactly zero
  for (let k = Math.ceil(lo / step); k * step <= hi + step * 1e-9; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

/**
 * A line chart. series: [{name, points: [[x, y], ...]}]; hlines: [{y, name}]; logY drops
 * non-positive values (said in the legend); xLabels optionally names the x positions.
 */
export function lineChart({ title, series, hlines = [], logY = false, xLabel = '', yLabel = '', xLabels = null, width = 640, height = 300, id }) {
  const m = { l: 70, r: 16, t: 28, b: 44 };
  const W = width - m.l - m.r;
  const H = height - m.t - m.b;
  const keep = (y) => Number.isFinite(y) && (!logY || y > 0);
  const xs = series.flatMap((se) => se.points.map((p) => p[0]));
  const ys = series.flatMap((se) => se.points.map((p) => p[1])).concat(hlines.map((h) => h.y)).filter(keep);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
  if (logY) {
    y0 = 10 ** Math.floor(Math.log10(y0));
    y1 = 10 ** Math.ceil(Math.log10(y1));
    if (y0 === y1) y1 = y0 * 10;
  } else {
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const X = (x) => m.l + ((x - x0) / (x1 - x0)) * W;
  const Y = (y) => m.t + H - (logY ? (Math.log10(y) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0)) : (y - y0) / (y1 - y0)) * H;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': title, class: 'chart', id });
  svg.append(s('title', {}, title));
  svg.append(s('text', { x: m.l, y: 16, class: 'chart-title' }, title));
  const axis = s('g', { class: 'axis' });
  for (const t of ticks(y0, y1, logY)) {
    if (t < y0 || t > y1) continue;
    axis.append(s('line', { x1: m.l, x2: m.l + W, y1: Y(t), y2: Y(t), class: 'grid' }));
    axis.append(s('text', { x: m.l - 6, y: Y(t) + 4, 'text-anchor': 'end' }, logY ? `1e${Math.round(Math.log10(t))}` : fmt(t)));
  }
  const xt = xLabels ? xs.filter((v, k, a) => a.indexOf(v) === k) : ticks(x0, x1, false, xs.every(Number.isInteger));
  const every = Math.ceil(xt.length / 12);
  xt.forEach((t, k) => {
    if (k % every) return;
    axis.append(s('text', { x: X(t), y: m.t + H + 16, 'text-anchor': 'middle' }, xLabels ? xLabels[t] ?? t : fmt(t)));
  });
  axis.append(s('line', { x1: m.l, x2: m.l, y1: m.t, y2: m.t + H, class: 'frame' }));
  axis.append(s('line', { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: 'frame' }));
  axis.append(s('text', { x: m.l + W / 2, y: height - 6, 'text-anchor': 'middle' }, xLabel));
  axis.append(s('text', { x: 14, y: m.t + H / 2, transform: `rotate(-90 14 ${m.t + H / 2})`, 'text-anchor': 'middle' }, yLabel + (logY ? ' (log)' : '')));
  svg.append(axis);
  hlines.forEach((h) => {
    if (!keep(h.y)) return;
    svg.append(s('line', { x1: m.l, x2: m.l + W, y1: Y(h.y), y2: Y(h.y), class: 'hline' }));
    svg.append(s('text', { x: m.l + W - 4, y: Y(h.y) - 4, 'text-anchor': 'end', class: 'hline-label' }, h.name));
  });
  series.forEach((se, k) => {
    const colour = COLOURS[k % COLOURS.length];
    const pts = se.points.filter((p) => keep(p[1]));
    const g = s('g', { class: 'series', 'data-name': se.name });
    if (se.line !== false && pts.length > 1)
      g.append(s('polyline', { points: pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(' '), fill: 'none', stroke: colour, 'stroke-width': 2, 'stroke-dasharray': DASHES[k % DASHES.length] }));
    for (const p of pts) {
      const mk = marker(MARKERS[k % MARKERS.length], X(p[0]), Y(p[1]), colour);
      mk.append(s('title', {}, `${se.name}: ${xLabels ? xLabels[p[0]] ?? p[0] : fmt(p[0])} → ${fmt(p[1])}`));
      mk.setAttribute('data-x', p[0]);
      mk.setAttribute('data-y', p[1]);
      g.append(mk);
    }
    svg.append(g);
  });
  const dash = (k) => s('line', { x1: 0, x2: 28, y1: 6, y2: 6, stroke: COLOURS[k % COLOURS.length], 'stroke-width': 2, 'stroke-dasharray': DASHES[k % DASHES.length] });
  return figure(svg, [
    ...series.map((se, k) => {
      const dropped = se.points.length - se.points.filter((p) => keep(p[1])).length;
      return [s('svg', { width: 28, height: 12, 'aria-hidden': 'true' }, dash(k), marker(MARKERS[k % MARKERS.length], 14, 6, COLOURS[k % COLOURS.length])),
        `${se.name}${dropped ? ` (${dropped} value${dropped > 1 ? 's' : ''} ≤ 0 not drawn)` : ''}`];
    }),
    ...hlines.map((hl) => [s('svg', { width: 28, height: 12, 'aria-hidden': 'true' }, s('line', { x1: 0, x2: 28, y1: 6, y2: 6, class: 'hline' })), hl.name]),
  ]);
}

/** Horizontal bars, one group per row: rows [{label, values: [..]}], keys [names]. */
export function barChart({ title, rows, keys, width = 640, id }) {
  const bh = 9;
  const gap = 6;
  const lw = 170;
  const W = width - lw - 90;
  const rowH = keys.length * bh + gap;
  const height = 30 + rows.length * rowH;
  const max = keys.map((_, k) => Math.max(1, ...rows.map((r) => r.values[k])));
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': title, class: 'chart', id });
  svg.append(s('title', {}, title));
  svg.append(s('text', { x: 4, y: 16, class: 'chart-title' }, title));
  rows.forEach((r, i) => {
    const y = 26 + i * rowH;
    svg.append(s('text', { x: lw - 6, y: y + (keys.length * bh) / 2 + 4, 'text-anchor': 'end', class: 'bar-label' }, r.label));
    keys.forEach((key, k) => {
      const w = (r.values[k] / max[k]) * W;
      const bar = s('rect', { x: lw, y: y + k * bh, width: Math.max(w, r.values[k] > 0 ? 1 : 0), height: bh - 1, fill: COLOURS[k], class: `bar bar-${k}`, 'data-value': r.values[k] });
      bar.append(s('title', {}, `${r.label} ${key}: ${fmt(r.values[k])}`));
      svg.append(bar);
      svg.append(s('text', { x: lw + w + 4, y: y + k * bh + bh - 1, class: 'bar-value' }, fmt(r.values[k])));
    });
  });
  return figure(svg, keys.map((key, k) => [s('svg', { width: 14, height: 10, 'aria-hidden': 'true' }, s('rect', { width: 14, height: 10, fill: COLOURS[k] })),
    `${key} (${k === 0 ? 'upper' : 'lower'} bar of each row, scaled to its own maximum)`]));
}

// Receptive field: the per-layer table, a unit picked on a layer's output grid, and the exact
// input cells it sees drawn on the input grid (holes and padding visible).
import { h, show, field, rangesText } from './dom.js';
import { s, fmt } from './svg.js';

export function create(ctx) {
  const base = h('select', { id: 'rf-base', dataset: { pointer: '/index_base' } }, h('option', { value: '0' }, 'zero-based'), h('option', { value: '1' }, 'one-based (the course)'));
  const verify = h('input', { type: 'checkbox', id: 'rf-verify', checked: true });
  const status = h('div', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const table = h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'scrollable table', id: 'rf-table' });
  const unit = h('div', { id: 'rf-unit' });
  const result = h('div', { id: 'rf-result' });
  const state = { layer: null, index: null, channel: null };
  let last = null;

  const panel = h('section', { class: 'panel' },
    h('h2', {}, 'Receptive field'),
    h('form', { class: 'controls', onsubmit: (e) => { e.preventDefault(); state.index = null; view.run(); } },
      field('Indices', base), field('Verify in libtorch', verify), h('button', { type: 'submit', id: 'rf-run' }, 'Compute')),
    status, h('div', { class: 'rf-layout' }, table, unit), result);

  // the same unit in the other numbering, answered again
  let shownBase = 0;
  base.addEventListener('change', () => {
    const b = Number(base.value);
    if (state.index) state.index = state.index.map((v) => v + b - shownBase);
    if (state.channel !== null) state.channel += b - shownBase;
    shownBase = b;
    if (last) run();
  });

  function body(withUnit) {
    const b = { model: ctx.model(), index_base: Number(base.value), verify: verify.checked };
    if (withUnit && state.layer !== null && state.index) {
      b.position = { layer: state.layer, index: state.index };
      if (state.channel !== null && state.channel !== '') b.position.channel = Number(state.channel);
    }
    return b;
  }

  function run() {
    return ctx.call(status, 'computing…', () => ctx.api('/v1/receptive-field', body(true)), (data) => {
      last = data;
      if (!data.layers.some((l) => l.path === state.layer)) {
        const spatial = data.layers.filter((l) => l.output_shape.length === 3);
        state.layer = (spatial.length ? spatial[spatial.length - 1] : data.layers[data.layers.length - 1]).path;
        state.index = null;
      }
      renderTable(data);
      renderUnit(data);
      renderPosition(data);
      const v = data.verification;
      return `${data.layers.length} layers; input ${data.model.input_shape.join('×')}, output ${data.model.output_shape.join('×')}` +
        (v ? `; libtorch ${v.ran ? (v.agrees ? 'agrees' : 'DISAGREES') : 'did not run'}` : '');
    });
  }

  function renderTable(data) {
    const b = data.index_base;
    const rows = data.layers.map((l) => {
      // integer-affine ranges, or ranges with floors (after upsampling) with their size span
      // (a 1-D signal's one axis, `length`, is shown as its rows)
      const q = l.rational;
      const axis = (a) => a && { size: a.min_size === a.max_size ? a.max_size : `${a.min_size}–${a.max_size}`, jump: a.jump, text: a.text };
      const one = (a) => a && { height: a, width: null };
      // a volume's depth first: d×h×w
      const both = (r, k) => (r.depth ? `${r.depth[k]}×` : '') + (r.width ? `${r.height[k]}×${r.width[k]}` : `${r.height[k]}`);
      const r = (l.receptive_field && (l.receptive_field.length ? one(l.receptive_field.length) : l.receptive_field)) ||
        (q && (q.length ? one(axis(q.length)) : { depth: q.depth && axis(q.depth), height: axis(q.height), width: axis(q.width) }));
      const tr = h('tr', { dataset: { path: l.path }, class: l.path === state.layer ? 'selected' : '' },
        h('td', {}, h('button', { type: 'button', class: 'link', title: 'pick a unit of this layer', onclick: () => { state.layer = l.path; state.index = null; renderTable(data); renderUnit(data); renderPosition(data); ctx.save(); } }, l.path)),
        h('td', {}, l.name || ''),
        h('td', {}, l.type),
        h('td', { class: 'num' }, l.output_shape.join('×')),
        h('td', { class: 'num', dataset: { field: 'size' } }, r ? both(r, 'size') : l.kind),
        h('td', { class: 'num', dataset: { field: 'jump' } }, r ? both(r, 'jump') : ''),
        h('td', { class: 'formula', dataset: { field: 'slices' } }, r && r.depth ? r.depth.text : ''),
        h('td', { class: 'formula', dataset: { field: 'rows' } }, r ? r.height.text : (l.tokens ? `tokens ${l.tokens.text}` : '')),
        h('td', { class: 'formula', dataset: { field: 'cols' } }, r && r.width ? r.width.text : ''),
        h('td', {}, l.branches ? `${l.aligned ? 'aligned' : 'not aligned'}: ` + l.branches.map((br) => `${br.label} ${br.receptive_field ? (br.receptive_field.length ? br.receptive_field.length.size : br.receptive_field.height.size + '×' + br.receptive_field.width.size) : '–'}`).join(', ') : ''));
      return tr;
    });
    show(table, h('table', { class: 'data' },
      h('caption', {}, `Per-layer receptive fields (${b === 1 ? 'one' : 'zero'}-based; formulas before clipping to the image)`),
      h('thead', {}, h('tr', {}, ['path', 'name', 'type', 'output', 'size', 'jump', 'slices', 'rows', 'columns', 'branches'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)));
  }

  function renderUnit(data) {
    const layer = data.layers.find((l) => l.path === state.layer);
    if (!layer) return show(unit);
    const b = data.index_base;
    const shape = layer.output_shape;
    const spatial = shape.length === 3;
    // a volume [C, D, H, W]: a unit is a slice k, row i and column j, with a channel
    const volume = shape.length === 4;
    // a 1-D signal [C, L]: a unit is a position i, with a channel
    const dims = spatial || volume ? shape.slice(1) : layer.signal ? [shape[1]] : [shape[0]];
    const idx = state.index || dims.map(() => b);
    // a channel picked on another layer (or model) that this layer does not have is dropped
    if (state.channel !== null && !(state.channel - b < shape[0])) state.channel = null;
    const names = volume ? ['slice k', 'row i', 'column j'] : ['row i', 'column j'];
    const inputs = dims.map((d, k) => h('input', { type: 'number', min: b, max: d - 1 + b, value: idx[k], id: `rf-index-${k}`, dataset: { pointer: '/position/index' }, 'aria-label': spatial || volume ? names[k] : 'unit' }));
    const channel = spatial || volume || layer.signal ? h('input', { type: 'number', min: b, max: shape[0] - 1 + b, value: state.channel ?? '', id: 'rf-channel', placeholder: 'all', dataset: { pointer: '/position/channel' } }) : null;
    const go = () => {
      state.index = inputs.map((i) => Number(i.value));
      state.channel = channel && channel.value !== '' ? Number(channel.value) : null;
      run();
    };
    const form = h('form', { class: 'controls', onsubmit: (e) => { e.preventDefault(); go(); } },
      spatial || volume ? [...dims.map((d, k) => field(`${names[k]} (${b}–${d - 1 + b})`, inputs[k])), field('channel', channel)]
        : layer.signal ? [field(`position i (${b}–${dims[0] - 1 + b})`, inputs[0]), field('channel', channel)] : field(`unit (${b}–${dims[0] - 1 + b})`, inputs[0]),
      h('button', { type: 'submit', id: 'rf-unit-run' }, 'Show its field'));
    const children = [h('h3', {}, `Unit of layer ${layer.name ? `${layer.name} (${layer.path})` : layer.path}: ${shape.join('×')}`), form];
    if (spatial) {
      const [H, W] = dims;
      const cs = Math.max(1, Math.min(16, Math.floor(320 / Math.max(H, W))));
      const grid = s('svg', { width: W * cs, height: H * cs, viewBox: `0 0 ${W * cs} ${H * cs}`, class: 'grid', id: 'rf-output-grid', role: 'img', 'aria-label': `output grid of layer ${layer.path}, ${H} by ${W}; click a unit` },
        s('rect', { width: W * cs, height: H * cs, class: 'grid-bg' }));
      if (cs >= 6) grid.append(gridLines(H, W, cs, 0, 0));
      if (state.index) {
        grid.append(s('rect', { x: (state.index[1] - b) * cs, y: (state.index[0] - b) * cs, width: Math.max(cs, 2), height: Math.max(cs, 2), class: 'picked', 'data-row': state.index[0], 'data-col': state.index[1] }));
      }
      grid.addEventListener('click', (e) => {
        const r = grid.getBoundingClientRect();
        const j = Math.min(W - 1, Math.floor(((e.clientX - r.left) / r.width) * W));
        const i = Math.min(H - 1, Math.floor(((e.clientY - r.top) / r.height) * H));
        inputs[0].value = i + b;
        inputs[1].value = j + b;
        go();
      });
      children.push(h('p', { class: 'hint' }, 'Click a unit on the output grid, or type its indices.'), grid);
    }
    show(unit, children);
  }

  function renderPosition(data) {
    const p = data.position;
    if (!p) return show(result, h('p', { class: 'hint' }, 'Pick a unit to see the input positions it depends on.'));
    const v = data.verification;
    const b = data.index_base;
    const facts = [];
    if (p.input_slices) facts.push(['slices p', rangesText(p.input_slices), 'slices']);
    if (p.input_rows) {
      facts.push(['rows m', rangesText(p.input_rows), 'rows'], ['columns n', rangesText(p.input_cols), 'cols'], ['channels', rangesText(p.input_channels), 'channels']);
      if (p.affine) facts.push(['affine (unclipped)', (p.affine.slices ? `slices ${p.affine.slices.join('…')}, ` : '') + `rows ${p.affine.rows.join('…')}, columns ${p.affine.cols.join('…')}`, 'affine']);
      facts.push(['tight box', (p.tight_box.slices ? `slices ${p.tight_box.slices.join('…')}, ` : '') + `rows ${p.tight_box.rows.join('…')}, columns ${p.tight_box.cols.join('…')}`, 'tight']);
      if (p.padding) facts.push(['in the padding', (p.padding.slices_outside_volume != null ? `${p.padding.slices_outside_volume} slices, ` : '') + `${p.padding.rows_outside_image} rows, ${p.padding.cols_outside_image} columns (${fmt(100 * p.padding.fraction_outside_image)}% of the affine window)`, 'padding']);
    } else if (p.input_positions) {
      facts.push(['positions m', rangesText(p.input_positions), 'positions'], ['channels', rangesText(p.input_channels), 'channels']);
    } else {
      if (p.input_tokens) facts.push(['input tokens', rangesText(p.input_tokens), 'tokens']);
      if (p.input_features) facts.push(['input features', rangesText(p.input_features), 'features']);
    }
    const layer = data.layers.find((l) => l.path === p.layer);
    const rf = layer && layer.receptive_field;
    if (rf) facts.push(['formula', rf.length ? rf.length.text : (rf.depth ? `${rf.depth.text}, ` : '') + `${rf.height.text}, ${rf.width.text}`, 'formula']);
    if (v) facts.push(['libtorch', v.ran ? `${v.agrees ? 'agrees' : 'DISAGREES'} (probe of ${v.probe_channels} of ${v.network_channels} channels, ${fmt(v.millis)} ms, ${v.device})` : `not run: ${v.reason || ''}`, 'verification']);
    (p.notes || []).forEach((n) => facts.push(['note', n, 'note']));
    const list = h('dl', { class: 'facts', id: 'rf-facts' }, facts.map(([k, val, key]) => [h('dt', {}, k), h('dd', { dataset: { fact: key } }, val)]));
    const out = [h('div', { class: 'rf-facts' }, h('h3', {}, `Unit ${p.index.join(', ')}${p.channel !== null ? `, channel ${p.channel}` : ''} of layer ${p.name || p.layer} sees`), list)];
    // the input's rows and columns (a volume's over every slice the unit reads)
    if (p.input_rows && p.affine) {
      const [H, W] = data.model.input_shape.slice(-2);
      const a = p.affine;
      const full = { r0: Math.min(b, a.rows[0]), r1: Math.max(H - 1 + b, a.rows[1]), c0: Math.min(b, a.cols[0]), c1: Math.max(W - 1 + b, a.cols[1]) };
      out.push(drawInput(data.model.input_shape, p, b, full, 'rf-input-grid', 'the whole input'));
      const zoom = { r0: a.rows[0] - 2, r1: a.rows[1] + 2, c0: a.cols[0] - 2, c1: a.cols[1] + 2 };
      if ((full.r1 - full.r0) > 2 * (zoom.r1 - zoom.r0) || (full.c1 - full.c0) > 2 * (zoom.c1 - zoom.c0))
        out.push(drawInput(data.model.input_shape, p, b, zoom, 'rf-input-zoom', 'zoomed to the affine window'));
    }
    show(result, h('div', { class: 'rf-result' }, out));
  }

  const view = {
    id: 'rf',
    title: 'Receptive field',
    usesModel: true,
    panel,
    status,
    run,
    get: () => ({ base: Number(base.value), verify: verify.checked, layer: state.layer, index: state.index, channel: state.channel }),
    set: (st) => {
      base.value = String(st.base ?? 0);
      shownBase = Number(base.value);
      verify.checked = st.verify ?? true;
      Object.assign(state, { layer: st.layer ?? null, index: st.index ?? null, channel: st.channel ?? null });
    },
  };
  return view;
}

function gridLines(H, W, cs, x0, y0) {
  const d = [];
  for (let i = 0; i <= H; i++) d.push(`M${x0},${y0 + i * cs}h${W * cs}`);
  for (let j = 0; j <= W; j++) d.push(`M${x0 + j * cs},${y0}v${H * cs}`);
  return s('path', { d: d.join(''), class: 'grid-lines' });
}

/** The input grid with the padding around it, the exact cells, the affine window and the tight box. */
function drawInput(inputShape, p, b, { r0, r1, c0, c1 }, id, what) {
  const [H, W] = inputShape.slice(-2);
  const nR = r1 - r0 + 1;
  const nC = c1 - c0 + 1;
  const cs = Math.max(1, Math.min(20, Math.floor(360 / Math.max(nR, nC))));
  const X = (c) => (c - c0) * cs;
  const Y = (r) => (r - r0) * cs;
  const svg = s('svg', { width: nC * cs, height: nR * cs, viewBox: `0 0 ${nC * cs} ${nR * cs}`, class: 'grid', id, role: 'img', 'aria-label': `input grid ${H} by ${W}, ${what}, with the unit's receptive field marked` },
    s('defs', {}, s('pattern', { id: `hatch-${id}`, width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' }, s('line', { x1: 0, y1: 0, x2: 0, y2: 6, class: 'hatch' }))),
    s('title', {}, 'input grid: padding hatched, the cells the unit depends on filled, the affine window dashed'),
    s('rect', { width: nC * cs, height: nR * cs, fill: `url(#hatch-${id})`, class: 'padding-area' }),
    s('rect', { x: X(b), y: Y(b), width: W * cs, height: H * cs, class: 'image-area' }));
  const cells = s('g', { class: 'rf-cells' });
  let count = 0;
  for (const [ra, rb] of p.input_rows)
    for (const [ca, cb] of p.input_cols) {
      count += (rb - ra + 1) * (cb - ca + 1);
      cells.append(s('rect', { x: X(ca), y: Y(ra), width: (cb - ca + 1) * cs, height: (rb - ra + 1) * cs, class: 'rf-cell', 'data-rows': `${ra},${rb}`, 'data-cols': `${ca},${cb}` }));
    }
  svg.append(cells);
  if (cs >= 6) svg.append(gridLines(nR, nC, cs, 0, 0));
  const a = p.affine;
  svg.append(s('rect', { x: X(a.cols[0]), y: Y(a.rows[0]), width: (a.cols[1] - a.cols[0] + 1) * cs, height: (a.rows[1] - a.rows[0] + 1) * cs, class: 'affine-box' }));
  const t = p.tight_box;
  svg.append(s('rect', { x: X(t.cols[0]), y: Y(t.rows[0]), width: (t.cols[1] - t.cols[0] + 1) * cs, height: (t.rows[1] - t.rows[0] + 1) * cs, class: 'tight-box' }));
  const holes = (ranges, [lo, hi]) => hi - lo + 1 - ranges.reduce((acc, [x, y]) => acc + y - x + 1, 0);
  const caption = h('figcaption', { class: 'legend' },
    h('span', {}, h('strong', {}, `Input rows ${r0}…${r1}, columns ${c0}…${c1} (${what})`)),
    h('span', {}, h('span', { class: 'swatch cell' }), ` ${fmt(count)} input cells per channel the unit depends on`),
    h('span', {}, h('span', { class: 'swatch pad' }), ' padding (outside the image)'),
    h('span', {}, h('span', { class: 'swatch affine' }), ' affine window (dashed)'),
    h('span', {}, `holes inside the tight box: ${holes(p.input_rows, t.rows)} rows, ${holes(p.input_cols, t.cols)} columns`));
  return h('figure', { class: 'chart-wrap rf-drawing' }, svg, caption);
}

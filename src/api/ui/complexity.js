// Complexity: the table under a convention or a tool's profile, sortable, with collapsible
// subtotal rows, a bar chart of FLOPs and parameters per layer, and CSV/Markdown downloads.
import { h, show, field, download } from './dom.js';
import { barChart, fmt } from './svg.js';

const COLUMNS = [
  ['path', 'path'], ['name', 'name'], ['type', 'type'], ['output_shape', 'output'],
  ['params', 'params'], ['multiplications', 'mults'], ['additions', 'adds'], ['macs', 'MACs'],
  ['flops', 'FLOPs'], ['activations', 'activations'], ['comparisons', 'comparisons'],
  ['output_bytes', 'output bytes'], ['flops_percent', 'FLOPs %'], ['params_percent', 'params %'],
];
const NUMERIC = new Set(['params', 'multiplications', 'additions', 'macs', 'flops', 'activations', 'comparisons', 'output_bytes', 'flops_percent', 'params_percent']);
const FLAGS = ['count_batchnorm', 'count_activations', 'count_pooling', 'count_residual_adds'];

export function create(ctx) {
  const select = (id, pointer, options) => h('select', { id, dataset: { pointer } }, options.map(([v, t]) => h('option', { value: v }, t)));
  const profile = select('cx-profile', '/profile', [['none', 'conventions below'], ['torch_flop_counter', 'torch.utils.flop_counter'], ['torchvision', 'torchvision'], ['fvcore', 'fvcore 0.1.5'], ['ptflops', 'ptflops 0.7.5']]);
  const additions = select('cx-additions', '/conventions/additions', [['accumulate', 'accumulate (k per output, the course)'], ['exact', 'exact (k-1 per output)']]);
  const flops = select('cx-flops', '/conventions/flops', [['mults_plus_adds', 'mults + adds'], ['2mac', '2 × MACs'], ['mac', 'MACs']]);
  const flags = Object.fromEntries(FLAGS.map((f) => [f, h('input', { type: 'checkbox', id: `cx-${f}`, dataset: { pointer: `/conventions/${f}` } })]));
  const batch = h('input', { type: 'number', id: 'cx-batch', min: 1, value: 1, dataset: { pointer: '/batch_size' } });
  const dtype = select('cx-dtype', '/dtype', ['float32', 'float16', 'bfloat16', 'float64', 'int8', 'uint8'].map((d) => [d, d]));
  const verify = h('input', { type: 'checkbox', id: 'cx-verify', checked: true });
  const status = h('div', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const out = h('div', { id: 'cx-out' });
  const sort = { key: null, dir: 1 };
  const collapsed = new Set();
  let last = null;

  const panel = h('section', { class: 'panel' },
    h('h2', {}, 'Parameters and operations'),
    h('form', { class: 'controls', onsubmit: (e) => { e.preventDefault(); run(); } },
      field('Count as', profile), field('Additions', additions), field('FLOPs of conv/linear', flops),
      FLAGS.map((f) => field(f.replace(/_/g, ' '), flags[f])),
      field('Batch', batch), field('dtype (bytes)', dtype), field('Verify in libtorch', verify),
      h('button', { type: 'submit', id: 'cx-run' }, 'Count'),
      h('button', { type: 'button', id: 'cx-csv', onclick: () => fetchAs('csv') }, 'Download CSV'),
      h('button', { type: 'button', id: 'cx-md', onclick: () => fetchAs('markdown') }, 'Download Markdown')),
    status, out);

  const syncProfile = () => {
    const on = profile.value === 'none';
    [additions, flops, ...Object.values(flags)].forEach((c) => (c.disabled = !on));
  };
  profile.addEventListener('change', syncProfile);

  function body() {
    const b = { model: ctx.model(), batch_size: Number(batch.value), dtype: dtype.value, verify: verify.checked };
    if (profile.value !== 'none') b.profile = profile.value;
    else {
      b.conventions = { additions: additions.value, flops: flops.value };
      FLAGS.forEach((f) => (b.conventions[f] = flags[f].checked));
    }
    return b;
  }

  async function fetchAs(format) {
    try {
      const text = await ctx.api(`/v1/complexity?format=${format}`, { ...body(), verify: false }, { text: true });
      download(`complexity.${format === 'csv' ? 'csv' : 'md'}`, format === 'csv' ? 'text/csv' : 'text/markdown', text);
      ctx.done(status, `downloaded complexity.${format === 'csv' ? 'csv' : 'md'}`);
    } catch (e) {
      ctx.problem(e, status);
    }
  }

  function run() {
    return ctx.call(status, 'counting…', () => ctx.api('/v1/complexity', body()), (data) => {
      last = data;
      render();
      const v = data.verification;
      return `${fmt(data.totals.params)} parameters, ${fmt(data.totals.flops)} FLOPs, ${fmt(data.totals.macs)} MACs` +
        (v ? `; libtorch ${v.ran ? (v.agrees ? 'agrees' : 'DISAGREES') : 'did not run'}` : '');
    });
  }

  function hiddenBy(path) {
    for (const c of collapsed) if (path.startsWith(`${c}.`)) return true;
    return false;
  }

  function render() {
    const data = last;
    let rows = data.rows.slice();
    if (sort.key) {
      const k = sort.key;
      rows.sort((a, b) => {
        const x = a[k] ?? '';
        const y = b[k] ?? '';
        return (NUMERIC.has(k) ? x - y : String(x).localeCompare(String(y))) * sort.dir;
      });
    }
    const head = h('tr', {}, COLUMNS.map(([k, label]) => h('th', { scope: 'col', 'aria-sort': sort.key === k ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none' },
      h('button', { type: 'button', class: 'sort', dataset: { key: k }, onclick: () => { sort.dir = sort.key === k ? -sort.dir : NUMERIC.has(k) ? -1 : 1; sort.key = k; render(); } }, label, sort.key === k ? (sort.dir > 0 ? ' ▲' : ' ▼') : ''))));
    const body = rows.filter((r) => sort.key || !hiddenBy(r.path)).map((r) => {
      const cells = COLUMNS.map(([k]) => {
        const v = r[k];
        if (k === 'path') {
          const pad = sort.key ? 0 : r.depth;
          const toggle = r.subtotal
            ? h('button', { type: 'button', class: 'toggle', 'aria-expanded': String(!collapsed.has(r.path)), 'aria-label': `${collapsed.has(r.path) ? 'expand' : 'collapse'} ${r.path}`, onclick: () => { collapsed.has(r.path) ? collapsed.delete(r.path) : collapsed.add(r.path); render(); } }, collapsed.has(r.path) ? '▸' : '▾')
            : null;
          return h('td', { class: `path depth-${Math.min(pad, 6)}` }, toggle, r.path);
        }
        if (k === 'output_shape') return h('td', { class: 'num' }, v.join('×'));
        return h('td', NUMERIC.has(k) ? { class: 'num', dataset: { key: k, value: v } } : {}, NUMERIC.has(k) ? fmt(v) : v ?? '');
      });
      return h('tr', { class: r.subtotal ? 'subtotal' : '', dataset: { path: r.path } }, cells);
    });
    const t = data.totals;
    const total = h('tr', { class: 'total', dataset: { path: 'total' } }, COLUMNS.map(([k], i) =>
      i === 0 ? h('th', { scope: 'row' }, 'total') : h('td', NUMERIC.has(k) && k in t ? { class: 'num', dataset: { key: k, value: t[k] } } : {}, k in t ? fmt(t[k]) : '')));
    const leaves = data.rows.filter((r) => !r.subtotal && (r.params > 0 || r.flops > 0));
    const chart = barChart({
      title: `FLOPs and parameters per layer (${leaves.length} layers with either)`,
      id: 'cx-chart',
      keys: ['FLOPs', 'params'],
      rows: leaves.map((r) => ({ label: `${r.path}${r.name ? ` ${r.name}` : ''}`.slice(0, 26), values: [r.flops, r.params] })),
    });
    const conv = data.profile ? `profile ${data.profile}` : Object.entries(data.conventions).map(([k, v]) => `${k}=${v}`).join(', ');
    show(out,
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'scrollable table' }, h('table', { class: 'data', id: 'cx-table' },
        h('caption', {}, `Batch ${data.batch_size}, ${data.dtype}; ${conv}. Subtotal rows (▾) add up their children and are not added again into the total.`),
        h('thead', {}, head), h('tbody', {}, body), h('tfoot', {}, total))),
      chart);
  }

  const view = {
    id: 'cx',
    title: 'Complexity',
    usesModel: true,
    panel,
    status,
    run,
    get: () => ({ profile: profile.value, additions: additions.value, flops: flops.value, flags: FLAGS.filter((f) => flags[f].checked), batch: Number(batch.value), dtype: dtype.value, verify: verify.checked }),
    set: (st) => {
      profile.value = st.profile ?? 'none';
      additions.value = st.additions ?? 'accumulate';
      flops.value = st.flops ?? 'mults_plus_adds';
      FLAGS.forEach((f) => (flags[f].checked = (st.flags || []).includes(f)));
      batch.value = st.batch ?? 1;
      dtype.value = st.dtype ?? 'float32';
      verify.checked = st.verify ?? true;
      syncProfile();
    },
  };
  return view;
}

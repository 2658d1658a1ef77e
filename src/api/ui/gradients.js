// Gradients: a real forward/backward run in libtorch; per-layer gradient norms on a log axis
// with the course's bound, activation statistics, the verdict, and the depth/scale sweep.
import { h, show, field } from './dom.js';
import { lineChart, fmt } from './svg.js';

const INITS = ['pytorch_default', 'xavier_uniform', 'xavier_normal', 'kaiming_uniform', 'kaiming_normal', 'normal', 'uniform'];

const numbers = (text) => text.split(/[\s,]+/).filter(Boolean).map(Number);

export function create(ctx) {
  const init = h('select', { id: 'gd-init', dataset: { pointer: '/init/type' } }, INITS.map((i) => h('option', { value: i }, i)));
  const std = h('input', { type: 'number', id: 'gd-std', step: 'any', value: 0.05, dataset: { pointer: '/init/std' } });
  const bound = h('input', { type: 'number', id: 'gd-bound', step: 'any', value: 0.1, dataset: { pointer: '/init/bound' } });
  const scale = h('input', { type: 'number', id: 'gd-scale', step: 'any', value: 1, dataset: { pointer: '/init/scale' } });
  const seed = h('input', { type: 'number', id: 'gd-seed', value: 1, dataset: { pointer: '/init/seed' } });
  const batch = h('input', { type: 'number', id: 'gd-batch', min: 1, value: 8, dataset: { pointer: '/inputs/batch_size' } });
  const objective = h('select', { id: 'gd-objective' }, h('option', { value: 'sum_output' }, 'sum of the outputs'), h('option', { value: 'output_unit' }, 'one output unit'));
  const unit = h('input', { type: 'number', id: 'gd-unit', min: 0, value: 0, dataset: { pointer: '/objective/output_unit' } });
  const dtype = h('select', { id: 'gd-dtype', dataset: { pointer: '/dtype' } }, h('option', { value: 'float64' }, 'float64'), h('option', { value: 'float32' }, 'float32'));
  const device = h('select', { id: 'gd-device', dataset: { pointer: '/device' } }, h('option', { value: 'cpu' }, 'cpu'), h('option', { value: 'auto' }, 'auto'));
  const depths = h('input', { type: 'text', id: 'gd-depths', value: '1, 2, 4, 8', dataset: { pointer: '/sweep/depths' } });
  const scales = h('input', { type: 'text', id: 'gd-scales', value: '0.5, 1, 4', dataset: { pointer: '/sweep/scales' } });
  const status = h('div', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const out = h('div', { id: 'gd-out' });

  const panel = h('section', { class: 'panel' },
    h('h2', {}, 'Gradient diagnostics'),
    h('form', { class: 'controls', onsubmit: (e) => { e.preventDefault(); run(); } },
      field('Init', init), field('std (normal)', std), field('bound (uniform)', bound), field('scale', scale), field('seed', seed),
      field('Batch', batch), field('Objective', objective), field('unit', unit), field('dtype', dtype), field('Device', device),
      field('Sweep depths', depths, 'repeat the first two layers; empty for none'), field('Sweep scales', scales),
      h('button', { type: 'submit', id: 'gd-run' }, 'Run forward and backward')),
    status, out);

  function body() {
    const b = {
      model: ctx.model(),
      init: { type: init.value, scale: Number(scale.value), seed: Number(seed.value) },
      inputs: { batch_size: Number(batch.value) },
      dtype: dtype.value,
      device: device.value,
    };
    if (init.value === 'normal') b.init.std = Number(std.value);
    if (init.value === 'uniform') b.init.bound = Number(bound.value);
    if (objective.value === 'output_unit') b.objective = { output_unit: Number(unit.value) };
    const d = numbers(depths.value);
    const sc = numbers(scales.value);
    if (d.length || sc.length) {
      b.sweep = {};
      if (d.length) b.sweep.depths = d;
      if (sc.length) b.sweep.scales = sc;
    }
    return b;
  }

  function run() {
    return ctx.call(status, 'running in libtorch…', () => ctx.api('/v1/gradient-diagnostics', body()), (d) => {
      render(d);
      return `${d.device}, ${d.dtype}, batch ${d.batch_size}: ${fmt(d.millis)} ms` + (d.device_note ? ` (${d.device_note})` : '');
    });
  }

  function render(d) {
    const layers = d.layers;
    const labels = Object.fromEntries(layers.map((l, k) => [k, l.name || l.path]));
    const series = [
      { name: '‖∂L/∂W‖ (Frobenius)', points: layers.map((l, k) => [k, l.weight_grad.frobenius]) },
      { name: '‖∂L/∂b‖', points: layers.filter((l) => l.bias_grad).map((l) => [layers.indexOf(l), l.bias_grad.frobenius]) },
    ];
    if (layers.some((l) => l.bias_grad_bound !== undefined && l.bias_grad_bound !== null))
      series.push({ name: "course bound on ‖∂L/∂b‖ (g' ≤ 1/4 for the sigmoid)", points: layers.filter((l) => l.bias_grad_bound != null).map((l) => [layers.indexOf(l), l.bias_grad_bound]) });
    const lastW = layers.length ? layers[layers.length - 1].weight_grad.frobenius : 0;
    const verdictText = { vanishing: '▼ vanishing', exploding: '▲ exploding', healthy: '● healthy' }[d.verdict] || d.verdict;
    const parts = [
      h('p', { class: `verdict verdict-${d.verdict}`, id: 'gd-verdict', dataset: { verdict: d.verdict } }, `Verdict: ${verdictText}`,
        d.first_vanishing_layer ? ` (first vanishing layer from the output: ${d.first_vanishing_layer})` : '', `; loss ${fmt(d.loss)}`),
      lineChart({ title: 'Gradient norms per layer', id: 'gd-chart', series, logY: true, xLabels: labels, xLabel: 'layer (input → output)', yLabel: 'norm',
        hlines: lastW > 0 ? [{ y: lastW * d.thresholds.vanishing_ratio, name: `vanishing threshold (${d.thresholds.vanishing_ratio} × last layer)` }] : [] }),
      h('p', { class: 'hint' }, d.bound_note),
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'scrollable table' }, h('table', { class: 'data', id: 'gd-layers' },
        h('caption', {}, 'Layers with parameters'),
        h('thead', {}, h('tr', {}, ['path', 'type', 'weight', '‖∂L/∂W‖', 'ratio to last', '‖∂L/∂b‖', 'bound', 'bound holds', 'spectral norm', 'verdict'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, layers.map((l) => h('tr', { dataset: { path: l.path } },
          h('td', {}, l.name ? `${l.path} ${l.name}` : l.path), h('td', {}, l.type), h('td', { class: 'num' }, l.weight_shape.join('×')),
          h('td', { class: 'num', dataset: { key: 'weight_grad', value: l.weight_grad.frobenius } }, fmt(l.weight_grad.frobenius)),
          h('td', { class: 'num' }, fmt(l.weight_grad_ratio_to_last)),
          h('td', { class: 'num', dataset: { key: 'bias_grad', value: l.bias_grad ? l.bias_grad.frobenius : '' } }, l.bias_grad ? fmt(l.bias_grad.frobenius) : '–'),
          h('td', { class: 'num', dataset: { key: 'bound', value: l.bias_grad_bound ?? '' } }, fmt(l.bias_grad_bound ?? null)),
          h('td', {}, l.bound_holds === undefined || l.bound_holds === null ? '–' : l.bound_holds ? 'yes' : 'NO'),
          h('td', { class: 'num' }, `${fmt(l.spectral_norm)}${l.spectral_norm_error ? ` (+${fmt(l.spectral_norm_error)})` : ''}`),
          h('td', { class: `verdict-${l.verdict}` }, l.verdict)))))),
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'scrollable table' }, h('table', { class: 'data', id: 'gd-activations' },
        h('caption', {}, `Activations (saturated: |~y| > ${d.thresholds.saturation})`),
        h('thead', {}, h('tr', {}, ['path', 'activation', 'mean |~y|', 'max |~y|', 'saturated', "mean g'", "sup g'", 'dead'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, d.activations.map((a) => h('tr', { dataset: { path: a.path } },
          h('td', {}, a.path), h('td', {}, a.activation), h('td', { class: 'num' }, fmt(a.mean_abs_pre_activation)), h('td', { class: 'num' }, fmt(a.max_abs_pre_activation)),
          h('td', { class: 'num', dataset: { key: 'fraction_saturated', value: a.fraction_saturated ?? '' } }, a.fraction_saturated == null ? '–' : `${fmt(100 * a.fraction_saturated)}%`),
          h('td', { class: 'num', dataset: { key: 'mean_derivative', value: a.mean_derivative ?? '' } }, fmt(a.mean_derivative ?? null)),
          h('td', { class: 'num' }, fmt(a.max_derivative ?? null)),
          h('td', { class: 'num', dataset: { key: 'dead_fraction', value: a.dead_fraction ?? '' } }, a.dead_fraction == null ? '–' : `${fmt(100 * a.dead_fraction)}%`)))))),
    ];
    if (d.sweep && d.sweep.length) {
      const byScale = new Map();
      d.sweep.forEach((r) => {
        if (!byScale.has(r.scale)) byScale.set(r.scale, []);
        byScale.get(r.scale).push([r.depth, r.first_to_last_bias_grad_ratio ?? r.first_to_last_weight_grad_ratio]);
      });
      parts.push(lineChart({
        title: 'Sweep: first-to-last gradient ratio against depth', id: 'gd-sweep', logY: true, xLabel: 'depth (repeats of the block)', yLabel: '‖∂L/∂b₁‖ / ‖∂L/∂b_L‖',
        series: [...byScale].map(([sc, pts]) => ({ name: `weight scale ${sc}`, points: pts })),
        hlines: [{ y: d.thresholds.vanishing_ratio, name: `vanishing ratio ${d.thresholds.vanishing_ratio}` }],
      }));
    }
    show(out, parts);
  }

  const view = {
    id: 'gd',
    title: 'Gradients',
    usesModel: true,
    panel,
    status,
    run,
    ready: () => {
      if (ctx.info && ctx.info.cuda_available) {
        device.append(h('option', { value: 'cuda' }, 'cuda'));
        for (let k = 0; k < ctx.info.cuda_device_count; k++) device.append(h('option', { value: `cuda:${k}` }, `cuda:${k}`));
      }
    },
    get: () => ({ init: init.value, std: Number(std.value), bound: Number(bound.value), scale: Number(scale.value), seed: Number(seed.value), batch: Number(batch.value), objective: objective.value, unit: Number(unit.value), dtype: dtype.value, device: device.value, depths: depths.value, scales: scales.value }),
    set: (st) => {
      init.value = st.init ?? 'normal';
      std.value = st.std ?? 0.05;
      bound.value = st.bound ?? 0.1;
      scale.value = st.scale ?? 1;
      seed.value = st.seed ?? 1;
      batch.value = st.batch ?? 8;
      objective.value = st.objective ?? 'sum_output';
      unit.value = st.unit ?? 0;
      dtype.value = st.dtype ?? 'float64';
      device.value = st.device ?? 'cpu';
      depths.value = st.depths ?? '';
      scales.value = st.scales ?? '';
    },
  };
  init.value = 'normal';
  return view;
}

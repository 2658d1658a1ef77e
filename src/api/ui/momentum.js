// Momentum: the heavy-ball forms run side by side, their trajectories, per-step differences
// and the explanation; the step-size schedule is editable.
import { h, show, field } from './dom.js';
import { lineChart, fmt } from './svg.js';

const numbers = (text) => text.split(/[\s,;]+/).filter(Boolean).map(Number);

export function create(ctx) {
  const theta0 = h('input', { type: 'text', id: 'mo-theta0', value: '0', dataset: { pointer: '/theta0' } });
  const gradients = h('textarea', { id: 'mo-gradients', rows: 3, dataset: { pointer: '/gradients' } }, '[[1], [1]]');
  const alpha = h('input', { type: 'text', id: 'mo-alpha', value: '0.1, 0.01', dataset: { pointer: '/alpha' } });
  const beta = h('input', { type: 'number', id: 'mo-beta', step: 'any', value: 0.9, dataset: { pointer: '/beta' } });
  const sutskever = h('input', { type: 'checkbox', id: 'mo-sutskever', checked: true });
  const sgd = h('input', { type: 'checkbox', id: 'mo-sgd', checked: true });
  const component = h('input', { type: 'number', id: 'mo-component', min: 0, value: 0 });
  const status = h('div', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const out = h('div', { id: 'mo-out' });
  let last = null;

  const panel = h('section', { class: 'panel' },
    h('h2', {}, 'Momentum equivalence'),
    h('p', { class: 'hint' }, 'Form I: θₖ₊₁ = θₖ − αₖ gₖ + β (θₖ − θₖ₋₁). Form II: vₖ₊₁ = gₖ + β vₖ, θₖ₊₁ = θₖ − αₖ vₖ₊₁. With a constant α they are the same method; the defaults are the documented witness where α changes.'),
    h('form', { class: 'controls', onsubmit: (e) => { e.preventDefault(); run(); } },
      field('θ₀ (numbers)', theta0), field('Gradients per step (JSON: one list per step)', gradients),
      field('α per step (one number for a constant α)', alpha), field('β', beta),
      field("Sutskever's form", sutskever), field("libtorch's SGD", sgd), field('Plot component', component),
      h('button', { type: 'submit', id: 'mo-run' }, 'Run the forms')),
    status, out);

  function body() {
    let g;
    try {
      g = JSON.parse(gradients.value);
    } catch (e) {
      throw Object.assign(new Error(`gradients are not valid JSON: ${e.message}`), { status: 0, title: 'Invalid input', detail: `gradients are not valid JSON: ${e.message}`, pointer: '/gradients' });
    }
    const a = numbers(alpha.value);
    return { theta0: numbers(theta0.value), gradients: g, alpha: a.length === 1 ? a[0] : a, beta: Number(beta.value), sutskever: sutskever.checked, pytorch_sgd: sgd.checked };
  }

  function run() {
    return ctx.call(status, 'running…', () => ctx.api('/v1/momentum/equivalence', body()), (d) => {
      last = d;
      render(d);
      return `${d.steps} steps, ${d.dtype}, tolerance ${d.tolerance}: ${d.verdict.replace(/_/g, ' ')}`;
    });
  }

  function render(d) {
    const c = Math.min(Number(component.value) || 0, d.parameters.reduce((n, p) => n + p.size, 0) - 1);
    const steps = d.returned_steps;
    const forms = Object.keys(d.trajectories);
    const parts = [
      h('p', { class: `verdict verdict-${d.all_forms_equivalent ? 'healthy' : 'vanishing'}`, id: 'mo-verdict', dataset: { verdict: d.verdict } },
        d.all_forms_equivalent ? '● all forms agree' : '▲ the forms are not all equivalent', ` (${d.verdict.replace(/_/g, ' ')})`),
      h('ul', { class: 'explanation', id: 'mo-explanation' }, d.explanation.map((t) => h('li', {}, t))),
      lineChart({ title: `θ[${c}] per step`, id: 'mo-trajectories', xLabel: 'step k', yLabel: `θ[${c}]`,
        series: forms.map((f) => ({ name: f.replace(/_/g, ' '), points: steps.map((k, n) => [k, d.trajectories[f].theta[n][c]]) })) }),
      lineChart({ title: 'max |θ_a − θ_b| per step', id: 'mo-differences', xLabel: 'step k', yLabel: 'difference',
        series: d.pairs.map((p) => ({ name: `${p.a} vs ${p.b}`, points: steps.map((k, n) => [k, p.max_abs_diff_per_step[n]]) })) }),
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'scrollable table' }, h('table', { class: 'data', id: 'mo-pairs' },
        h('caption', {}, d.tolerance_rule),
        h('thead', {}, h('tr', {}, ['form a', 'form b', 'equivalent', 'first step over tolerance', 'max |difference|'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, d.pairs.map((p) => h('tr', { dataset: { pair: `${p.a}|${p.b}` } },
          h('td', {}, p.a), h('td', {}, p.b), h('td', {}, p.equivalent ? 'yes' : 'no'),
          h('td', { class: 'num' }, p.first_step_over_tolerance ?? '–'), h('td', { class: 'num', dataset: { value: p.max_abs_diff } }, fmt(p.max_abs_diff))))))),
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'scrollable table' }, h('table', { class: 'data', id: 'mo-theta' },
        h('caption', {}, `θ[${c}] by form`),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'step'), forms.map((f) => h('th', { scope: 'col' }, f)))),
        h('tbody', {}, steps.map((k, n) => h('tr', {}, h('th', { scope: 'row' }, k), forms.map((f) => h('td', { class: 'num', dataset: { form: f, step: k, value: d.trajectories[f].theta[n][c] } }, fmt(d.trajectories[f].theta[n][c])))))))),
    ];
    show(out, parts);
  }

  component.addEventListener('change', () => last && render(last));

  const view = {
    id: 'mo',
    title: 'Momentum',
    usesModel: false,
    panel,
    status,
    run,
    get: () => ({ theta0: theta0.value, gradients: gradients.value, alpha: alpha.value, beta: Number(beta.value), sutskever: sutskever.checked, sgd: sgd.checked, component: Number(component.value) }),
    set: (st) => {
      theta0.value = st.theta0 ?? '0';
      gradients.value = st.gradients ?? '[[1], [1]]';
      alpha.value = st.alpha ?? '0.1, 0.01';
      beta.value = st.beta ?? 0.9;
      sutskever.checked = st.sutskever ?? true;
      sgd.checked = st.sgd ?? true;
      component.value = st.component ?? 0;
    },
  };
  return view;
}

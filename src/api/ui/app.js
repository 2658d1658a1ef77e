// The playground: a model picker and spec editor shared by the tabs, the API client, the
// error display (problem+json pointers shown at their line in the editor), and permalinks.
import { h, show } from './dom.js';
import { parseWithSpans, locate, lineCol, JsonSyntaxError } from './json.js';
import * as rf from './rf.js';
import * as complexity from './complexity.js';
import * as gradients from './gradients.js';
import * as momentum from './momentum.js';
import * as grade from './grade.js';

/** Networks the page offers beside the server's presets (written out as specs). */
const EXAMPLES = {
  sigmoid_mlp: {
    label: 'sigmoid MLP (P2, 32-32-32-1)',
    spec: {
      input_shape: [32],
      layers: [
        { type: 'linear', out_features: 32 }, { type: 'sigmoid' },
        { type: 'linear', out_features: 32 }, { type: 'sigmoid' },
        { type: 'linear', out_features: 1 },
      ],
    },
  },
};

/** An error answer of the API (problem+json), or a failure to reach it. */
export class ApiProblem extends Error {
  constructor(p) {
    super(p.detail || p.title || 'request failed');
    Object.assign(this, p);
  }
}

const $ = (sel) => document.querySelector(sel);
const KEY = 'layerscope.api_key';

const ctx = {
  info: null,
  presets: [],
  /** POSTs `body` (or GETs when body is undefined); JSON back, or text when `text` is set. */
  async api(path, body, { text = false } = {}) {
    const headers = { accept: text ? '*/*' : 'application/json' };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.authorization = `Bearer ${key}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let resp;
    try {
      resp = await fetch(path, { method: body === undefined ? 'GET' : 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiProblem({ status: 0, title: 'Service unreachable', detail: `the service could not be reached (${e.message})`, pointer: '' });
    }
    if (!resp.ok) {
      let p;
      try {
        p = await resp.json();
      } catch {
        p = { status: resp.status, title: resp.statusText, detail: `HTTP ${resp.status}`, pointer: '' };
      }
      if (resp.status === 401) $('#api-key').setAttribute('aria-invalid', 'true');
      if (resp.headers.get('retry-after')) p.detail += ` (retry after ${resp.headers.get('retry-after')} s)`;
      throw new ApiProblem(p);
    }
    $('#api-key').removeAttribute('aria-invalid');
    return text ? resp.text() : resp.json();
  },
  /** The model in the editor, or throws after showing where its JSON is broken. */
  model() {
    clearEditorError();
    const text = $('#spec').value;
    try {
      return parseWithSpans(text).value;
    } catch (e) {
      if (e instanceof JsonSyntaxError) {
        showEditorError(e.line, e.col, e.offset, e.offset + 1, `JSON syntax: ${e.message}`, '');
        throw new ApiProblem({ status: 0, title: 'Invalid JSON', detail: `the spec is not valid JSON (line ${e.line}, column ${e.col}): ${e.message}`, pointer: '/model', shown: true });
      }
      throw e;
    }
  },
  /** Shows an error: at its line in the editor when it points into the model, else in `status`. */
  problem(err, status) {
    const ptr = err.pointer ?? '';
    let where = '';
    if (!err.shown && ptr.startsWith('/model')) {
      const inner = ptr.slice('/model'.length);
      const text = $('#spec').value;
      try {
        const { spans } = parseWithSpans(text);
        const at = locate(spans, inner);
        if (at) {
          const { line, col } = lineCol(text, at.keyStart);
          showEditorError(line, col, at.keyStart, at.end, err.detail, ptr);
          where = ` (shown in the spec editor at line ${line})`;
        }
      } catch {
        /* the text changed since the request: report in the tab */
      }
    } else if (err.shown) {
      where = ' (shown in the spec editor)';
    }
    status.className = 'status error';
    show(status, h('strong', {}, `${err.status ? err.status + ' ' : ''}${err.title || 'Error'}: `), err.detail || err.message, ptr && !where ? h('code', { class: 'pointer' }, ` at ${ptr}`) : null, where);
    status.dataset.pointer = ptr;
    // a control that carries the pointer gets marked too
    document.querySelectorAll('[aria-invalid][data-pointer]').forEach((c) => c.removeAttribute('aria-invalid'));
    if (ptr) document.querySelectorAll(`[data-pointer="${CSS.escape(ptr)}"]`).forEach((c) => c.setAttribute('aria-invalid', 'true'));
  },
  /**
   * One request of a tab: says it is running, shows a failure where it points, else hands the
   * answer to `render`, which draws it and returns the tab's status line; the address then
   * records the view.
   */
  async call(status, what, request, render) {
    this.busy(status, what);
    let data;
    try {
      data = await request();
    } catch (e) {
      this.problem(e, status);
      return;
    }
    this.done(status, render(data));
    this.save();
  },
  /** Clears a tab's status line and says what is running. */
  busy(status, what) {
    status.className = 'status busy';
    status.dataset.pointer = '';
    show(status, what);
  },
  done(status, text) {
    status.className = 'status ok';
    show(status, text);
  },
  /** Rewrites the address so that it reproduces this view (called after each run). */
  save() {
    const state = { tab: current.id, model: $('#spec').value };
    for (const v of views) state[v.id] = v.get();
    history.replaceState(null, '', `#${current.id}/${encodeState(state)}`);
  },
};

function encodeState(state) {
  const bytes = new TextEncoder().encode(JSON.stringify(state));
  let bin = '';
  bytes.forEach((b) => (bin += String.fromCharCode(b)));
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function decodeState(text) {
  const bin = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
}

// ---- the spec editor ----

function renumber() {
  const lines = $('#spec').value.split('\n').length;
  const gutter = $('#gutter');
  if (gutter.childElementCount !== lines) {
    // as tall as the text, between 4 and 16 lines (the user can still drag it)
    $('#spec').rows = Math.max(4, Math.min(16, lines));
    show(gutter, Array.from({ length: lines }, (_, k) => h('span', { dataset: { line: k + 1 } }, `${k + 1}`)));
  }
  gutter.scrollTop = $('#spec').scrollTop;
}

function clearEditorError() {
  $('#spec').removeAttribute('aria-invalid');
  document.querySelectorAll('#gutter .err').forEach((e) => e.classList.remove('err'));
  const box = $('#spec-error');
  box.hidden = true;
  box.dataset.line = '';
  box.dataset.pointer = '';
}

function showEditorError(line, col, start, end, message, pointer) {
  renumber();
  const spec = $('#spec');
  spec.setAttribute('aria-invalid', 'true');
  const mark = document.querySelector(`#gutter [data-line="${line}"]`);
  if (mark) mark.classList.add('err');
  const box = $('#spec-error');
  box.hidden = false;
  box.dataset.line = line;
  box.dataset.col = col;
  box.dataset.pointer = pointer;
  show(box, h('strong', {}, `Line ${line}, column ${col}`), pointer ? h('code', {}, ` ${pointer}`) : null, `: ${message}`);
  // scroll the field into view and select it
  const lineHeight = parseFloat(getComputedStyle(spec).lineHeight) || 18;
  spec.scrollTop = Math.max(0, (line - 3) * lineHeight);
  spec.setSelectionRange(start, Math.max(start + 1, end));
  renumber();
}

function setModel(value) {
  $('#spec').value = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  clearEditorError();
  renumber();
}

async function pick() {
  const name = $('#model-picker').value;
  if (!name) return;
  if (name in EXAMPLES) setModel(EXAMPLES[name].spec);
  else setModel({ preset: name });
}

async function expandPreset() {
  try {
    const m = ctx.model();
    if (!m || typeof m.preset !== 'string') return;
    const p = await ctx.api(`/v1/presets/${encodeURIComponent(m.preset)}`);
    setModel(p.spec);
  } catch (e) {
    ctx.problem(e, current.status);
  }
}

// ---- tabs ----

const views = [rf, complexity, gradients, momentum, grade].map((m) => m.create(ctx));
let current = views[0];

function select(view, focus = false) {
  current = view;
  for (const v of views) {
    const on = v === view;
    v.tab.setAttribute('aria-selected', on);
    v.tab.tabIndex = on ? 0 : -1;
    v.panel.hidden = !on;
  }
  $('#model-panel').hidden = !view.usesModel;
  if (focus) view.tab.focus();
}

function buildTabs() {
  const list = $('#tabs');
  views.forEach((v, k) => {
    v.tab = h('button', { role: 'tab', id: `tab-${v.id}`, 'aria-controls': `panel-${v.id}`, type: 'button', onclick: () => { select(v); ctx.save(); } }, v.title);
    v.tab.addEventListener('keydown', (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) select(views[(k + step + views.length) % views.length], true);
      if (e.key === 'Home') select(views[0], true);
      if (e.key === 'End') select(views[views.length - 1], true);
    });
    list.append(v.tab);
    v.panel.id = `panel-${v.id}`;
    v.panel.setAttribute('role', 'tabpanel');
    v.panel.setAttribute('aria-labelledby', `tab-${v.id}`);
    $('#panels').append(v.panel);
  });
}

async function init() {
  buildTabs();
  const keyField = $('#api-key');
  $('#key-form').addEventListener('submit', (e) => e.preventDefault());
  keyField.value = sessionStorage.getItem(KEY) || '';
  keyField.addEventListener('change', () => {
    if (keyField.value) sessionStorage.setItem(KEY, keyField.value.trim());
    else sessionStorage.removeItem(KEY);
  });
  $('#spec').addEventListener('input', () => { clearEditorError(); renumber(); $('#model-picker').value = ''; });
  $('#spec').addEventListener('scroll', renumber);
  $('#model-picker').addEventListener('change', pick);
  $('#expand').addEventListener('click', expandPreset);
  $('#permalink').addEventListener('click', async () => {
    ctx.save();
    try {
      await navigator.clipboard.writeText(location.href);
      $('#permalink-note').textContent = 'copied';
    } catch {
      $('#permalink-note').textContent = 'the address bar holds the link';
    }
  });
  try {
    const [info, presets] = await Promise.all([ctx.api('/v1/info'), ctx.api('/v1/presets')]);
    ctx.info = info;
    ctx.presets = presets.presets;
    $('#server').textContent = `layerscope ${info.version}, libtorch ${info.libtorch_version}, ${info.cuda_available ? `CUDA (${info.cuda_device_count} device${info.cuda_device_count > 1 ? 's' : ''})` : 'CPU only'}`;
  } catch (e) {
    $('#server').textContent = `server information unavailable: ${e.message}${e.status === 401 ? ' (enter an API key)' : ''}`;
  }
  const picker = $('#model-picker');
  show(picker,
    h('option', { value: '' }, '(the spec below, as edited)'),
    h('optgroup', { label: 'Presets' }, ctx.presets.map((p) => h('option', { value: p.name, title: p.description }, p.name))),
    h('optgroup', { label: 'Examples' }, Object.entries(EXAMPLES).map(([k, e]) => h('option', { value: k }, e.label))));
  views.forEach((v) => v.ready && v.ready());
  let state = null;
  const m = /^#([a-z]+)(?:\/(.+))?$/.exec(location.hash);
  if (m && m[2]) {
    try {
      state = decodeState(m[2]);
    } catch {
      state = null;
    }
  }
  if (state) {
    setModel(state.model ?? '');
    try {
      const p = parseWithSpans(state.model).value;
      if (p && typeof p.preset === 'string') picker.value = p.preset;
    } catch { /* leave the picker */ }
    for (const v of views) if (state[v.id]) v.set(state[v.id]);
    select(views.find((v) => v.id === state.tab) || views[0]);
    current.run();
  } else {
    picker.value = 'vgg_stem';
    setModel({ preset: 'vgg_stem' });
    select(views.find((v) => m && v.id === m[1]) || views[0]);
  }
  document.body.dataset.ready = '1';
  performance.mark('layerscope-ready');
}

init();

// Grade: a student's answers (one "id: answer" per line, as answers.txt) graded against the
// course's problem set, with the feedback a student would see.
import { h, show, field, markdownBold } from './dom.js';
import { fmt } from './svg.js';

const SAMPLE = `# one answer per line: question id, colon, answer
p4.pool2.rows: 4i-9 <= m <= 4i+6
p5.reduced.params.branch2: 67,232
p5.reduced.params: 346,720
p5.naive.params: 1,089,000`;

/** "id: answer" lines (blank lines and # comments skipped) as an answers object. */
export function parseAnswers(text) {
  const answers = {};
  for (const raw of text.replace(/^\uFEFF/, '').split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const at = line.indexOf(':');
    if (at < 0) continue;
    answers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return answers;
}

export function create(ctx) {
  const answers = h('textarea', { id: 'gr-answers', rows: 10, spellcheck: 'false', dataset: { pointer: '/answers' } }, SAMPLE);
  const reveal = h('select', { id: 'gr-reveal', dataset: { pointer: '/reveal' } }, ['none', 'hints', 'answers'].map((r) => h('option', { value: r }, r)));
  const onlyAnswered = h('input', { type: 'checkbox', id: 'gr-only', checked: true });
  const set = h('select', { id: 'gr-set', dataset: { pointer: '/problem_set' } }, h('option', { value: 'course' }, 'the course (P2–P5)'), h('option', { value: 'variant' }, 'a generated variant'));
  const seed = h('input', { type: 'number', id: 'gr-seed', min: 0, value: 1, dataset: { pointer: '/seed' } });
  const text = h('pre', { id: 'gr-text', class: 'variant-text', hidden: true });
  const seedField = field('Variant seed', seed);
  const sync = () => {
    seedField.hidden = set.value !== 'variant';
    text.hidden = set.value !== 'variant' || !text.textContent;
  };
  set.addEventListener('change', sync);
  async function showVariant() {
    try {
      const v = await ctx.api('/v1/variants', { seed: Number(seed.value) });
      text.textContent = v.markdown;
      sync();
      ctx.done(status, `variant ${v.seed}: ${v.questions.length} questions`);
    } catch (e) {
      ctx.problem(e, status);
    }
  }
  const status = h('div', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const out = h('div', { id: 'gr-out' });
  let last = null;
  reveal.value = 'hints';
  sync();

  const panel = h('section', { class: 'panel' },
    h('h2', {}, 'Grade answers'),
    h('p', { class: 'hint' }, 'The course problem set (P2–P5), or a generated variant from its seed. Answers are read as students write them: 1,089,952, 224/1, 1.09M, 4i-9 <= m <= 4i+6, 4(i-2)-1 <= m <= 4i+6, [4i-9, 4i+6].'),
    h('form', { class: 'controls', onsubmit: (e) => { e.preventDefault(); run(); } },
      field('Problem set', set), seedField,
      h('button', { type: 'button', id: 'gr-show', onclick: () => { set.value = 'variant'; showVariant(); } }, 'Show the variant'),
      field('Answers (id: answer per line)', answers), field('Reveal', reveal), field('Show only answered questions', onlyAnswered),
      h('button', { type: 'submit', id: 'gr-run' }, 'Grade')),
    status, text, out);

  function run() {
    const body = { problem_set: set.value, answers: parseAnswers(answers.value), reveal: reveal.value };
    if (set.value === 'variant') body.seed = Number(seed.value);
    const request = () => ctx.api('/v1/grade', body);
    return ctx.call(status, 'grading…', request, (d) => {
      last = d;
      render(d);
      return d.summary;
    });
  }

  function render(d) {
    const given = parseAnswers(answers.value);
    const rows = d.questions.filter((q) => !onlyAnswered.checked || q.id in given);
    show(out,
      h('p', { class: 'score', id: 'gr-score', dataset: { score: d.score, max: d.max_score } }, `Score: ${fmt(d.score)} / ${fmt(d.max_score)}`),
      d.unknown_answer_ids.length ? h('p', { class: 'status error', id: 'gr-unknown' }, `Not questions of this set (check the ids): ${d.unknown_answer_ids.join(', ')}`) : null,
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'scrollable table' }, h('table', { class: 'data', id: 'gr-table' },
        h('caption', {}, `${rows.length} of ${d.questions.length} questions shown`),
        h('thead', {}, h('tr', {}, ['question', 'answer', 'score', 'result', 'feedback', 'expected'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.map((q) => h('tr', { dataset: { id: q.id, correct: q.correct } },
          h('td', {}, h('code', {}, q.id)), h('td', {}, q.answer), h('td', { class: 'num', dataset: { score: q.score } }, `${fmt(q.score)} / ${fmt(q.max_score)}`),
          h('td', { class: q.correct ? 'verdict-healthy' : 'verdict-vanishing' }, q.correct ? '✓ right' : '✗ wrong'),
          h('td', { class: 'feedback' }, markdownBold(q.feedback)), h('td', {}, q.expected)))))));
  }

  onlyAnswered.addEventListener('change', () => last && render(last));

  const view = {
    id: 'gr',
    title: 'Grade',
    usesModel: false,
    panel,
    status,
    run,
    get: () => ({ answers: answers.value, reveal: reveal.value, only: onlyAnswered.checked, set: set.value, seed: Number(seed.value) }),
    set: (st) => {
      set.value = st.set ?? 'course';
      seed.value = st.seed ?? 1;
      sync();
      answers.value = st.answers ?? SAMPLE;
      reveal.value = st.reveal ?? 'hints';
      onlyAnswered.checked = st.only ?? true;
    },
  };
  return view;
}

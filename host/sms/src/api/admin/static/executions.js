// The Executions page: the newest first (paged by SMS's page tokens, filtered by state), one
// execution followed live (its state, exit, stdout and stderr) with Cancel, and Submit.
import { $, FINAL, api, button, el, guarded, row, sse, table, time, toast } from './lib.js';

const LIMIT = 50;
let tokens = [''];  // the page token of each page seen so far; the last is the current page's
let watching = null;

export async function executions() {
  const state = $('exec-state').value;
  const token = tokens[tokens.length - 1];
  const list = await api('GET', `/api/v1/executions?order=desc&limit=${LIMIT}` +
    (state ? '&state=' + state : '') + (token ? '&page_token=' + encodeURIComponent(token) : ''));
  table('executions', ['ID', 'Task', 'State', 'Node', 'Attempt', 'Exit', 'Submitted', 'Updated', ''],
    list.executions.map(x => row([x.execution_id, x.task_id || x.executable.type, x.state, x.node_uuid || '',
      `${x.attempt}/${x.max_attempts}`, x.result ? x.result.exit_code : (x.error || ''),
      time(x.submitted_at_ms), time(x.updated_at_ms),
      FINAL.includes(x.state) ? '' : button('Cancel', () => cancel(x.execution_id), 'small danger')],
    { class: 'state-' + x.state, data: { execution: x.execution_id } }, () => guarded(() => open(x.execution_id)))));
  const counts = Object.entries(list.counts || {}).filter(([, n]) => n).map(([s, n]) => `${s} ${n}`).join(' · ');
  $('exec-pager').replaceChildren(el('span', { class: 'muted' }, counts),
    Object.assign(button('Newer', () => { tokens.pop(); executions(); }, 'small'), { disabled: tokens.length < 2 }),
    Object.assign(button('Older', () => { tokens.push(list.next_page_token); executions(); }, 'small'),
      { disabled: !list.next_page_token }));
}

export function filtered() {
  tokens = [''];
  return executions();
}

async function cancel(id) {
  await guarded(async () => {
    await api('POST', `/api/v1/executions/${encodeURIComponent(id)}/cancel`, {});
    await executions();
  });
}

function show(x) {
  const panel = $('exec-detail');
  panel.hidden = false;
  const r = x.result;
  const lines = [
    ['ID', x.execution_id], ['Task', x.task_id || '(inline)'], ['Executable', `${x.executable.type} ${x.executable.uri || x.executable.name}`],
    ['State', x.state], ['Node', x.node_uuid || ''], ['Attempt', `${x.attempt}/${x.max_attempts}`],
    ['Exit', r ? `${r.exit_code}${r.signal ? ' (signal ' + r.signal + ')' : ''} in ${r.duration_ms} ms` : ''],
    ['Error', x.error || ''], ['Submitted', time(x.submitted_at_ms)], ['Updated', time(x.updated_at_ms)],
  ];
  const out = (name, text, cut) => [el('h3', {}, name + (cut ? ' (truncated by the node)' : '')),
    el('pre', { id: 'exec-' + name.toLowerCase(), tabindex: '0' }, text || '')];
  panel.replaceChildren(el('h2', {}, 'Execution ' + x.execution_id),
    el('dl', { id: 'exec-fields-list' }, ...lines.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { data: { field: k.toLowerCase() } }, v)])),
    ...out('Stdout', r && r.stdout, r && r.stdout_truncated), ...out('Stderr', r && r.stderr, r && r.stderr_truncated),
    el('div', { class: 'row' },
      FINAL.includes(x.state) ? '' : button('Cancel', () => cancel(x.execution_id), 'danger'),
      button('Close', () => { stop(); panel.hidden = true; })));
}

function stop() {
  if (watching) watching.abort();
  watching = null;
}

/** Show execution `id` and follow it until it ends. */
export async function open(id) {
  stop();
  const controller = new AbortController();
  watching = controller;
  show(await api('GET', '/api/v1/executions/' + encodeURIComponent(id)));
  try {
    await sse(`/api/v1/executions/${encodeURIComponent(id)}/watch`, controller.signal, (kind, data) => {
      if (kind !== 'execution' || watching !== controller) return;
      show(JSON.parse(data));
    });
  } catch { /* closed, or SMS went away: what was shown stays */ }
  if (watching === controller) executions().catch(() => {});
}

async function submit(ev) {
  ev.preventDefault();
  const body = { task_id: $('submit-task').value, priority: $('submit-priority').value };
  const timeout = Number($('submit-timeout').value);
  if (timeout) body.timeout_ms = timeout;
  const attempts = Number($('submit-attempts').value);
  if (attempts) body.max_attempts = attempts;
  if ($('submit-stdin').value) body.stdin = $('submit-stdin').value;
  try {
    const e = await api('POST', '/api/v1/executions', body);
    $('submit-modal').close();
    toast(`execution ${e.execution_id} submitted`);
    await executions();
    guarded(() => open(e.execution_id));
  } catch (e) {
    $('submit-error').textContent = e.message;
  }
}

async function newSubmission() {
  const list = await guarded(() => api('GET', '/admin/api/tasks?sort=name:asc&limit=1000'));
  if (!list) return;
  const runnable = list.tasks.filter(t => t.executable_type && t.status !== 'unregistered');
  $('submit-task').replaceChildren(...runnable.map(t => el('option', { value: t.task_id }, `${t.name} (${t.task_id})`)));
  $('submit-form').reset();
  $('submit-error').textContent = runnable.length ? '' : 'no task can run: register one with an executable first';
  $('submit-modal').showModal();
}

/** Wire the page's controls. */
export function setup() {
  $('exec-state').addEventListener('change', filtered);
  $('exec-new').addEventListener('click', newSubmission);
  $('submit-cancel').addEventListener('click', () => $('submit-modal').close());
  $('submit-form').addEventListener('submit', submit);
}

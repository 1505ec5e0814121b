// The Tasks page: the list (paged and searched on the server), the Create Task form with its
// executable types, schemes and Choose Local, Run and Unregister.
import { $, api, bytes, button, el, guarded, pager, row, say, table, time, toast } from './lib.js';
import { open as openExecution } from './executions.js';

const LIMIT = 50;
let offset = 0;

let drawn = 0;  // the newest request drawn: an older answer arriving late is dropped

export async function tasks() {
  const q = encodeURIComponent($('task-search').value.trim());
  const asked = ++drawn;
  const list = await api('GET', `/admin/api/tasks?sort=registered_at:desc&q=${q}&offset=${offset}&limit=${LIMIT}`);
  if (asked !== drawn) return;
  if (offset > 0 && offset >= list.total_count) {
    offset = Math.max(0, Math.floor((list.total_count - 1) / LIMIT) * LIMIT);
    return tasks();
  }
  table('tasks', ['ID', 'Name', 'Status', 'Priority', 'Executable', 'Node', 'Registered', ''],
    list.tasks.map(t => row([t.task_id, t.name, t.status, t.priority,
      t.executable_type ? `${t.executable_type} ${t.executable_uri || t.executable_name}` : '(none)',
      t.node_uuid || 'any', time(t.registered_at_ms),
      el('span', { class: 'actions' },
        Object.assign(button('Run', () => run(t.task_id), 'small'), { disabled: !t.executable_type || t.status === 'unregistered' }),
        button(t.status === 'unregistered' ? 'Remove' : 'Unregister', () => remove(t), 'small danger'))],
    { data: { task: t.task_id } })));
  pager('tasks-pager', offset, LIMIT, list.tasks.length, list.total_count, o => { offset = o; tasks(); });
}

/** A new search starts at the first page (asked once typing pauses). */
let typing = null;
export function searched() {
  clearTimeout(typing);
  typing = setTimeout(() => {
    offset = 0;
    tasks().catch(() => {});
  }, 200);
}

async function run(id) {
  await guarded(async () => {
    const e = await api('POST', '/api/v1/executions', { task_id: id });
    toast(`execution ${e.execution_id} submitted`);
    location.hash = '#executions';
    openExecution(e.execution_id).catch(err => say('error: ' + err.message, true));
  });
}

async function remove(t) {
  const verb = t.status === 'unregistered' ? 'Remove' : 'Unregister';
  if (!confirm(`${verb} task ${t.name}?`)) return;
  await guarded(async () => {
    const r = await api('DELETE', '/api/v1/tasks/' + encodeURIComponent(t.task_id));
    toast(r.message);
    await tasks();
  });
}

function typeChanged() {
  const type = $('exec-type').value;
  $('exec-fields').disabled = !type;
  return type;
}

function schemeChanged() {
  const scheme = $('exec-scheme').value;
  const uri = $('exec-uri');
  if (!uri.value.startsWith(scheme + '://')) uri.value = scheme + '://';
  $('choose-local').disabled = scheme !== 'sms+file';
}

async function create(ev) {
  ev.preventDefault();
  const type = typeChanged();
  const body = {
    name: $('task-name').value.trim(),
    description: $('task-description').value,
    priority: $('task-priority').value,
    endpoint: $('task-endpoint').value.trim(),
    version: $('task-version').value.trim(),
  };
  const node = $('task-node').value.trim();
  if (node) body.node_uuid = node;
  if (type) {
    body.executable = {
      type,
      uri: $('exec-uri').value.trim(),
      name: $('exec-name').value.trim(),
      args: $('exec-args').value.split('\n').map(s => s.trim()).filter(Boolean),
    };
    const sum = $('exec-checksum').value.trim();
    if (sum) body.executable.checksum_sha256 = sum;
  }
  try {
    const r = await api('POST', '/admin/api/tasks', body);
    $('task-modal').close();
    toast(`task ${r.task_id} registered`);
    location.hash = '#tasks';
    await tasks();
  } catch (e) {
    $('task-error').textContent = e.message;
  }
}

async function pick() {
  let list;
  try {
    list = (await api('GET', '/admin/api/files')).files;
  } catch (e) {
    $('task-error').textContent = e.message;
    return;
  }
  table('picker-files', ['Name', 'ID', 'Size', ''],
    list.map(f => row([f.name, f.id, bytes(f.len), button('Use', () => {
      $('exec-uri').value = f.uri;
      if (!$('exec-name').value) $('exec-name').value = f.name || '';
      $('file-picker').close();
      $('exec-name').focus();
    }, 'small')], { data: { file: f.id } })));
  $('file-picker').showModal();
}

/** Wire the page's controls. */
export function setup() {
  $('task-search').addEventListener('input', searched);
  $('task-new').addEventListener('click', () => {
    $('task-form').reset();
    $('task-error').textContent = '';
    $('exec-uri').value = 'sms+file://';
    typeChanged();
    schemeChanged();
    $('task-modal').showModal();
  });
  $('exec-type').addEventListener('change', typeChanged);
  $('exec-scheme').addEventListener('change', schemeChanged);
  $('choose-local').addEventListener('click', pick);
  $('picker-close').addEventListener('click', () => $('file-picker').close());
  $('task-cancel').addEventListener('click', () => $('task-modal').close());
  $('task-form').addEventListener('submit', create);
}

// SMS's web admin: the page switcher and start-up (docs/web-admin.md). Each page lives in its
// own module; lib.js holds what they share.
import { $, denied, say, store, time } from './lib.js';
import * as nodes from './nodes.js';
import * as tasks from './tasks.js';
import * as executions from './executions.js';
import * as files from './files.js';
import * as system from './system.js';

const pages = {
  nodes: nodes.nodes,
  tasks: tasks.tasks,
  executions: executions.executions,
  files: files.files,
  plugins: system.plugins,
  events: system.eventsPage,
  settings: system.settings,
};

function current() {
  const name = (location.hash || '#nodes').slice(1);
  return pages[name] ? name : 'nodes';
}

async function show(name) {
  for (const a of document.querySelectorAll('#tabs a')) {
    const on = a.dataset.page === name;
    a.classList.toggle('current', on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== 'page-' + name;
  try {
    await pages[name]();
    say('updated ' + time(Date.now()));
  } catch (e) {
    if (!denied(e)) say('error: ' + e.message, true);
  }
}

// The live streams, restarted when the token changes.
let streams = null;
function follow() {
  if (streams) streams.abort();
  streams = new AbortController();
  nodes.follow(streams.signal, () => current() === 'nodes');
  system.followEvents(streams.signal, () => current() === 'events', kind => {
    // The executions list follows their events, a burst redrawn once.
    if (kind.startsWith('execution.') && current() === 'executions' && !refreshing) {
      refreshing = setTimeout(() => {
        refreshing = null;
        executions.executions().catch(() => {});
      }, 300);
    }
  });
}
let refreshing = null;

function applyToken(token) {
  store.set('token', token.trim());
  $('toolbar-token').value = store.get('token', '');
  $('settings-token').value = store.get('token', '');
  $('toolbar-token').classList.remove('attention');
  follow();
  show(current());
}

$('toolbar-token').value = store.get('token', '');
$('toolbar-apply').addEventListener('click', () => applyToken($('toolbar-token').value));
$('toolbar-token').addEventListener('keydown', e => { if (e.key === 'Enter') applyToken($('toolbar-token').value); });
$('node-search').addEventListener('input', nodes.searched);
tasks.setup();
executions.setup();
files.setup();
system.setup(applyToken);
window.addEventListener('hashchange', () => show(current()));
show(current());
follow();
// Pages without a stream of their own are refreshed now and then (not while a form is open).
setInterval(() => {
  const name = current();
  if (['tasks', 'executions', 'files', 'plugins'].includes(name) && !document.querySelector('dialog[open]')) show(name);
}, 10000);

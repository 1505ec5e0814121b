// The stats cards, the Nodes page (paged and searched on the server) and the live node stream.
import { $, api, bytes, button, el, guarded, needToken, pager, row, sse, table, time, ApiError } from './lib.js';

const LIMIT = 50;
let offset = 0;

// The cards come from two places — the stream's snapshots and `stats()` answers — which may
// arrive out of order: each source's update is numbered when it is asked (a snapshot when it
// arrives), and an older one never replaces a newer.
let cardsAsked = 0;
let cardsShown = 0;

function showCards(s, asked) {
  if (asked < cardsShown) return;
  cardsShown = asked;
  cards(s);
}

function cards(s) {
  $('stat-total').textContent = s.total_count;
  $('stat-online').textContent = s.online_count;
  $('stat-offline').textContent = s.offline_count;
  $('stat-recent').textContent = s.recent_60s_count;
  $('stat-tasks').textContent = s.task_count;
  $('stat-files').textContent = s.file_count;
}

export async function stats() {
  const asked = ++cardsAsked;
  showCards(await api('GET', '/admin/api/stats'), asked);
}

let drawn = 0;  // the newest request drawn: an older answer arriving late is dropped

/** The nodes page; with `cards`, the stats cards too (a snapshot brings its own). */
export async function nodes(cards = true) {
  const q = encodeURIComponent($('node-search').value.trim());
  const asked = ++drawn;
  const [list] = await Promise.all([
    api('GET', `/admin/api/nodes?sort=registered_at:asc&q=${q}&offset=${offset}&limit=${LIMIT}`),
    cards ? stats() : null]);
  if (asked !== drawn) return;
  if (offset > 0 && offset >= list.total_count) {
    offset = Math.max(0, Math.floor((list.total_count - 1) / LIMIT) * LIMIT);
    return nodes(cards);
  }
  table('nodes', ['UUID', 'Name', 'Address', 'Status', 'Running', 'Executors', 'Last heartbeat', 'Registered'],
    list.nodes.map(n => row([n.uuid, n.name, `${n.ip_address}:${n.port}`, n.status, n.running,
      (n.executors || []).join(', '), time(n.last_heartbeat_ms), time(n.registered_at_ms)],
    { class: 'status-' + n.status, data: { uuid: n.uuid } }, () => guarded(() => detail(n.uuid)))));
  pager('nodes-pager', offset, LIMIT, list.nodes.length, list.total_count, o => { offset = o; nodes(); });
}

/** A new search starts at the first page (asked once typing pauses). */
let typing = null;
export function searched() {
  clearTimeout(typing);
  typing = setTimeout(() => {
    offset = 0;
    nodes().catch(() => {});
  }, 200);
}

async function detail(uuid) {
  const d = await api('GET', '/admin/api/nodes/' + encodeURIComponent(uuid));
  const panel = $('node-detail');
  panel.hidden = false;
  if (!d.found) { panel.replaceChildren(el('p', {}, `node ${uuid} is gone`)); return; }
  const r = d.resource;
  const lines = [
    ['UUID', d.node.uuid], ['Status', d.node.status], ['Address', `${d.node.ip_address}:${d.node.port}`],
    ['Labels', JSON.stringify(d.node.labels || {})], ['Metadata', JSON.stringify(d.node.metadata || {})],
    ['Capacity', JSON.stringify(d.node.capacity || {})], ['Available', JSON.stringify(d.node.available || {})],
    ['CPU', r ? r.cpu_usage_percent + ' %' : 'not reported'],
    ['Memory', r ? `${r.memory_usage_percent} % of ${bytes(r.total_memory_bytes)}` : 'not reported'],
    ['Disk', r ? r.disk_usage_percent + ' %' : 'not reported'],
  ];
  const close = button('Close', () => { panel.hidden = true; });
  panel.replaceChildren(el('h2', {}, 'Node ' + (d.node.name || d.node.uuid)),
    el('dl', {}, ...lines.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])), close);
  close.focus();
}

/** Follow `/admin/api/nodes/stream` while `signal` lasts: cards at each snapshot, and the nodes
 * table when `showing()` says it is shown. */
export async function follow(signal, showing) {
  const live = $('live');
  while (!signal.aborted) {
    try {
      await sse('/admin/api/nodes/stream', signal, (kind, data) => {
        if (kind !== 'snapshot') return;
        live.textContent = 'live';
        live.className = 'on';
        showCards(JSON.parse(data), ++cardsAsked);
        if (showing()) nodes(false).catch(() => {});
      });
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) needToken(e.message);
    }
    live.textContent = 'offline';
    live.className = 'off';
    if (!signal.aborted) await new Promise(r => setTimeout(r, 3000));
  }
}

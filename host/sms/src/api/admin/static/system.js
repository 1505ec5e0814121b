// The Plugins page (the plugins, the active scheduler, Reload, the history with its reasons),
// the live Events page and Settings.
import { $, api, guarded, row, sse, store, table, time, toast } from './lib.js';

export async function plugins() {
  const [p, h] = await Promise.all([api('GET', '/api/v1/plugins'), api('GET', '/api/v1/plugins/history')]);
  const s = p.scheduler || {};
  $('scheduler').textContent = 'active scheduler: ' + (s.plugin ? `${s.plugin.name} ${s.plugin.version || ''}` : 'built-in round-robin') +
    (s.quarantined ? ' (quarantined)' : '');
  table('plugins', ['Name', 'Kind', 'Form', 'Version', 'State', 'SHA-256', 'Last error'],
    p.plugins.map(x => row([x.name, x.kind, x.form, x.version, x.state, (x.sha256 || '').slice(0, 12), x.last_error || ''],
      { class: 'state-' + x.state, data: { plugin: x.name } })));
  const reloads = (h.reloads || []).slice(-50).reverse();
  table('reloads', ['Time', 'Trigger', 'Outcome', 'Changes', 'Error'],
    reloads.map(r => row([time(r.at_ms), r.trigger, r.outcome, (r.changes || []).join('; '), r.error || ''],
      { class: 'outcome-' + r.outcome })));
  const events = (h.events || []).slice(-100).reverse();
  table('plugin-events', ['Time', 'Plugin', 'Event', 'Reason'],
    events.map(e => row([time(e.at_ms), e.plugin || '', e.kind, e.message])));
}

async function reload() {
  await guarded(async () => {
    const r = await api('POST', '/api/v1/plugins/reload', {});
    toast(`reload: ${r.outcome}${r.error ? ' (' + r.error + ')' : ''}`);
  });
  await guarded(plugins);
}

const events = [];

export async function eventsPage() {
  table('events', ['Cursor', 'Time', 'Kind', 'Subject', 'By'],
    events.map(v => row([v.cursor, time(v.at_ms), v.kind, v.subject, v.by || ''])));
}

/** Follow SMS's event log while `signal` lasts, keeping the last 200 events; `onEvent(kind)`
 * hears of each (the executions page refreshes on `execution.*`). */
export async function followEvents(signal, showing, onEvent) {
  let after = null;
  while (!signal.aborted) {
    try {
      // From the newest event when the page opens; after the last one seen when it reconnects.
      if (after === null) after = (await api('GET', '/admin/api/stats')).event_cursor;
      await sse('/api/v1/events?after=' + after, signal, (kind, data) => {
        if (kind === 'error') {
          // Compacted past where this page was: go on from the newest.
          after = null;
          return;
        }
        const event = JSON.parse(data);
        after = event.cursor;
        events.unshift(event);
        events.length = Math.min(events.length, 200);
        if (showing()) eventsPage();
        onEvent(kind);
      });
    } catch (e) {
      // Compacted past where this page was (410): go on from the newest. Else no token yet,
      // or SMS went away: try again.
      if (e.status === 410) after = null;
    }
    if (!signal.aborted) await new Promise(r => setTimeout(r, 3000));
  }
}

export async function settings() {
  $('theme').value = store.get('theme', 'system');
  $('timezone').value = store.get('tz', '');
  $('settings-token').value = store.get('token', '');
}

export function applyTheme() {
  document.documentElement.dataset.theme = store.get('theme', 'system');
}

function timeZones() {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  $('timezone').replaceChildren(new Option('Browser default', ''),
    ...['UTC', ...zones.filter(z => z !== 'UTC')].map(z => new Option(z, z)));
}

/** Wire the page's controls; `applyToken(t)` keeps a token and reconnects. */
export function setup(applyToken) {
  timeZones();
  applyTheme();
  $('reload').addEventListener('click', reload);
  $('settings').addEventListener('submit', e => {
    e.preventDefault();
    store.set('theme', $('theme').value === 'system' ? '' : $('theme').value);
    store.set('tz', $('timezone').value);
    applyTheme();
    applyToken($('settings-token').value);
    toast('settings applied');
  });
  $('settings-clear').addEventListener('click', () => { $('settings-token').value = ''; applyToken(''); });
}

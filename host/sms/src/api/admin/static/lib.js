// What every page of the web admin uses: settings kept in local storage, calls to SMS with the
// token, the status line, DOM building (text only: values from SMS are never parsed as HTML),
// tables with keyboard-reachable rows, pagers, times in the chosen zone, and SSE over fetch
// (EventSource cannot send a token).

export const store = {
  get: (k, d) => localStorage.getItem('spear-admin-' + k) ?? d,
  set: (k, v) => (v ? localStorage.setItem('spear-admin-' + k, v) : localStorage.removeItem('spear-admin-' + k)),
};

export const $ = id => document.getElementById(id);

export function authHeaders(extra) {
  const h = Object.assign({}, extra);
  const token = store.get('token', '');
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export const denied = e => e instanceof ApiError && (e.status === 401 || e.status === 403);

/** Call SMS: JSON in and out; a refusal throws ApiError with SMS's message. */
export async function api(method, path, body, headers) {
  const opts = { method, headers: authHeaders(headers) };
  if (body instanceof Blob) opts.body = body;
  else if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers['content-type'] = 'application/json';
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const message = (data && data.error && data.error.message) || `${r.status} ${r.statusText}`;
    if (r.status === 401 || r.status === 403) needToken(message);
    throw new ApiError(r.status, message);
  }
  return data;
}

export function needToken(message) {
  say((store.get('token', '') ? 'invalid token: ' : 'this SMS needs a token: ') + message, true);
  $('toolbar-token').classList.add('attention');
}

export function say(text, bad) {
  const s = $('status');
  s.textContent = text;
  s.className = bad ? 'error' : '';
}

export function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

/** Run `f`, showing its failure in the status line. */
export async function guarded(f) {
  try { return await f(); } catch (e) { if (!denied(e)) say('error: ' + e.message, true); return null; }
}

export function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ''));
  return e;
}

export function table(id, head, rows) {
  const t = $(id);
  t.replaceChildren(el('thead', {}, el('tr', {}, ...head.map(h => el('th', { scope: 'col' }, h)))));
  const body = el('tbody');
  for (const r of rows) body.append(r);
  if (!rows.length) body.append(el('tr', { class: 'empty' }, el('td', { colspan: head.length }, 'nothing yet')));
  t.append(body);
}

/** A row; with `open`, it is focusable and opens on click, Enter or Space. */
export function row(cells, props, open) {
  const p = Object.assign({}, props);
  if (open) {
    p.tabindex = '0';
    p.class = ((p.class || '') + ' clickable').trim();
    p.onclick = e => { if (!e.target.closest('button')) open(); };
    p.onkeydown = e => { if ((e.key === 'Enter' || e.key === ' ') && e.target === e.currentTarget) { e.preventDefault(); open(); } };
  }
  return el('tr', p, ...cells.map(c => el('td', {}, c)));
}

export function button(text, onclick, cls) {
  return el('button', { type: 'button', class: cls || '', onclick }, text);
}

/** Draw "from–to of total" and Prev/Next into `id`; `go(offset)` turns the page. */
export function pager(id, offset, limit, shown, total, go) {
  const from = total ? offset + 1 : 0;
  $(id).replaceChildren(
    el('span', { class: 'muted' }, `${from}–${offset + shown} of ${total}`),
    Object.assign(button('Prev', () => go(Math.max(0, offset - limit)), 'small'), { disabled: offset === 0 }),
    Object.assign(button('Next', () => go(offset + limit), 'small'), { disabled: offset + shown >= total }));
}

/** Times in the time zone chosen in Settings (the browser's own by default). */
export function time(ms) {
  if (!ms) return '';
  const timeZone = store.get('tz', '') || undefined;
  try {
    return new Intl.DateTimeFormat(undefined, { timeZone, dateStyle: 'short', timeStyle: 'medium' }).format(new Date(ms));
  } catch {
    return new Date(ms).toISOString();
  }
}

export function bytes(n) {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return n.toFixed(1) + ' ' + units[i];
}

/** Read the Server-Sent Events of `path` until it ends or `signal` aborts. */
export async function sse(path, signal, onEvent) {
  const r = await fetch(path, { headers: authHeaders(), signal });
  if (!r.ok) throw new ApiError(r.status, `${path}: ${r.status}`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    text += value;
    let end;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      let kind = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) kind = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trimStart();
      }
      if (data) onEvent(kind, data);
    }
  }
}

export const FINAL = ['succeeded', 'failed', 'cancelled', 'timed_out'];

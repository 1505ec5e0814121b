// The Files page: Choose File and Upload; each stored file with Download, Copy URI and Delete.
import { $, api, authHeaders, bytes, button, el, guarded, row, say, table, time, toast } from './lib.js';
import { stats } from './nodes.js';

export async function files() {
  const [list] = await Promise.all([api('GET', '/admin/api/files'), stats()]);
  table('files', ['Name', 'ID', 'Size', 'Uploaded', ''],
    list.files.map(f => row([f.name, f.id, bytes(f.len), time(f.uploaded_at_ms),
      el('span', { class: 'actions' },
        button('Download', () => download(f), 'small'),
        button('Copy URI', () => copy(f.uri), 'small'),
        button('Delete', () => remove(f), 'small danger'))],
    { data: { file: f.id } })));
}

async function download(f) {
  try {
    const r = await fetch('/admin/api/files/' + encodeURIComponent(f.id), { headers: authHeaders() });
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    const url = URL.createObjectURL(await r.blob());
    const a = el('a', { href: url, download: f.name || f.id });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { say('download failed: ' + e.message, true); }
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard permission (plain HTTP on another host): copy through a selected text field.
    const t = el('textarea', { readonly: '' });
    t.value = text;
    document.body.append(t);
    t.select();
    document.execCommand('copy');
    t.remove();
  }
  toast('copied ' + text);
}

async function remove(f) {
  if (!confirm(`Delete ${f.name || f.id}?`)) return;
  await guarded(async () => {
    await api('DELETE', '/admin/api/files/' + encodeURIComponent(f.id));
    toast('deleted ' + (f.name || f.id));
    await files();
  });
}

async function upload() {
  const file = $('file-input').files[0];
  if (!file) return;
  $('upload').disabled = true;
  try {
    const r = await api('POST', '/admin/api/files?name=' + encodeURIComponent(file.name), file,
      { 'content-type': 'application/octet-stream' });
    toast(`uploaded ${file.name}: ${r.uri}`);
    $('file-input').value = '';
    $('file-name').textContent = 'no file chosen';
    await files();
  } catch (e) {
    say('upload failed: ' + e.message, true);
    $('upload').disabled = false;
  }
}

/** Wire the page's controls. */
export function setup() {
  $('file-input').addEventListener('change', () => {
    const f = $('file-input').files[0];
    $('file-name').textContent = f ? `${f.name} (${bytes(f.size)})` : 'no file chosen';
    $('upload').disabled = !f;
  });
  $('upload').addEventListener('click', upload);
}

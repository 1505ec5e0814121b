// SMS's web admin as SPEAR's README describes it, in a real browser (Debian's chromium driven by
// playwright-core), against an SMS with `[auth]` off and SMS_WEB_ADMIN_TOKEN set:
//
//   node admin_ui.mjs <web admin URL> <SMS_WEB_ADMIN_TOKEN>
//
// Settings (theme, time zone, token), the nodes list with its live stream and stats cards, a
// node's detail, the file manager (Choose File, Upload, Download, Copy URI, Delete), task
// creation (every executable type, the scheme prefill, Choose Local), unregistering, and the
// executions page (an execution submitted from the tasks list, then cancelled). Each step checks
// SMS's own answer through the REST API, not only the page.
import { createHash } from 'node:crypto';
import { client, expect, run } from './lib.mjs';

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error('usage: node admin_ui.mjs <web admin URL> <SMS_WEB_ADMIN_TOKEN>');
  process.exit(2);
}
const api = client(base, token);
const TZ = 'Asia/Tokyo';

await run(async (page, context) => {
  const status = page.locator('#status');
  const go = name => page.click(`#tabs a[data-page="${name}"]`);

  // The token protects this admin: none, and the page asks for one.
  await page.goto(base + '/');
  await status.filter({ hasText: 'needs a token' }).waitFor({ timeout: 10000 });
  const bare = await fetch(base + '/admin/api/nodes');
  expect(bare.status === 401, `/admin/api/nodes without a token: ${bare.status}`);

  // Settings: theme, time zone and token, applied and kept.
  await go('settings');
  await page.selectOption('#theme', 'dark');
  await page.selectOption('#timezone', TZ);
  await page.fill('#settings-token', token);
  await page.click('#settings-apply');
  await page.locator('#toast', { hasText: 'settings applied' }).waitFor();
  expect(await page.evaluate(() => document.documentElement.dataset.theme) === 'dark', 'dark theme');
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(bg === 'rgb(21, 22, 26)', 'dark background: ' + bg);
  const kept = await page.evaluate(() => [localStorage.getItem('spear-admin-tz'), localStorage.getItem('spear-admin-theme')]);
  expect(kept[0] === TZ && kept[1] === 'dark', 'settings kept: ' + kept);
  console.log('ok: Settings applies the theme, the time zone and the token');

  // Nodes: the list, its times in the chosen zone, search, detail, live updates.
  const a = await api('POST', '/api/v1/nodes', { ip_address: '10.1.0.1', port: 7001, metadata: { name: 'edge-a', zone: 'eu' } });
  await go('nodes');
  const rowA = page.locator('#nodes tr', { hasText: a.node_uuid });
  await rowA.waitFor({ timeout: 10000 });
  const shown = await rowA.locator('td').nth(7).textContent();
  const want = await page.evaluate(([ms, tz]) => new Intl.DateTimeFormat(undefined,
    { timeZone: tz, dateStyle: 'short', timeStyle: 'medium' }).format(new Date(ms)), [a.node.registered_at_ms, TZ]);
  expect(shown === want, `registered time in ${TZ}: ${shown} != ${want}`);
  await page.locator('#live.on').waitFor({ timeout: 10000 });
  await page.locator('#stat-total', { hasText: '1' }).waitFor();
  const b = await api('POST', '/api/v1/nodes', { ip_address: '10.1.0.2', port: 7002 });
  await page.locator('#nodes td', { hasText: b.node_uuid }).waitFor({ timeout: 4000 });
  await page.locator('#stat-total', { hasText: '2' }).waitFor({ timeout: 4000 });
  await page.locator('#stat-online', { hasText: '2' }).waitFor();
  console.log('ok: the nodes list shows times in the chosen zone and follows the live stream');

  // A stats answer older than the stream's snapshot never replaces it (on a busy machine they
  // cross): the answer to the Nodes page's stats request is held until after a newer snapshot.
  await page.route('**/admin/api/stats', async r => {
    const held = await r.fetch();
    await new Promise(res => setTimeout(res, 1500));
    await r.fulfill({ response: held });
  });
  await go('files');
  await go('nodes');
  await page.waitForTimeout(300);
  const c = await api('POST', '/api/v1/nodes', { ip_address: '10.1.0.3', port: 7003 });
  await page.locator('#stat-total', { hasText: '3' }).waitFor({ timeout: 4000 });
  await page.waitForTimeout(2000);
  const shownTotal = await page.locator('#stat-total').textContent();
  expect(shownTotal === '3', 'a held, older stats answer replaced the snapshot: ' + shownTotal);
  await page.unroute('**/admin/api/stats');
  await api('DELETE', `/api/v1/nodes/${c.node_uuid}`);
  await page.locator('#stat-total', { hasText: '2' }).waitFor({ timeout: 4000 });
  console.log('ok: an older stats answer never replaces a newer snapshot');

  await page.fill('#node-search', 'EU');
  await page.locator('#nodes td', { hasText: b.node_uuid }).waitFor({ state: 'detached', timeout: 5000 });
  expect(await page.locator('#nodes tbody tr').count() === 1, 'the search keeps one node');
  await api('PUT', `/api/v1/nodes/${a.node_uuid}/resource`, { cpu_usage_percent: 42.5, memory_usage_percent: 10,
    total_memory_bytes: 8 * 1024 ** 3, used_memory_bytes: 1024 ** 3, available_memory_bytes: 7 * 1024 ** 3, disk_usage_percent: 3 });
  await rowA.click();
  await page.locator('#node-detail dd', { hasText: '42.5 %' }).waitFor({ timeout: 5000 });
  await page.locator('#node-detail dd', { hasText: '8.0 GiB' }).waitFor();
  await page.fill('#node-search', '');
  console.log('ok: the search narrows the list and a node shows its resources');

  // Ten thousand nodes: the page shows fifty at a time and searches on the server; rows open
  // from the keyboard.
  const MANY = 10000;
  for (let i = 0; i < MANY; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, MANY - i) }, (_, j) =>
      api('POST', '/api/v1/nodes', { ip_address: '10.2.0.1', port: 1000 + ((i + j) % 60000), metadata: { name: `bulk-${i + j}` } })));
  }
  const total = MANY + 2;
  await page.locator('#nodes-pager', { hasText: `1–50 of ${total}` }).waitFor({ timeout: 15000 });
  expect(await page.locator('#nodes tbody tr').count() === 50, 'fifty rows a page');
  await page.locator('#nodes-pager button', { hasText: 'Next' }).click();
  await page.locator('#nodes-pager', { hasText: `51–100 of ${total}` }).waitFor({ timeout: 5000 });
  await page.fill('#node-search', 'bulk-9999');
  await page.locator('#nodes-pager', { hasText: '1–1 of 1' }).waitFor({ timeout: 5000 });
  await page.focus('#nodes tbody tr');
  await page.keyboard.press('Enter');
  await page.locator('#node-detail h2', { hasText: 'bulk-9999' }).waitFor({ timeout: 5000 });
  await page.fill('#node-search', '');
  console.log('ok: ten thousand nodes are paged and searched on the server, and open from the keyboard');

  // Files: choose, upload, download, copy the URI, delete.
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  await go('files');
  const script = '#!/bin/sh\necho from the admin\n';
  await page.setInputFiles('#file-input', { name: 'tool.sh', mimeType: 'text/x-shellscript', buffer: Buffer.from(script) });
  await page.locator('#file-name', { hasText: 'tool.sh' }).waitFor();
  await page.click('#upload');
  const toolId = createHash('sha256').update(script).digest('hex');
  await page.locator('#files tr', { hasText: toolId }).waitFor({ timeout: 10000 });
  await page.setInputFiles('#file-input', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello admin') });
  await page.click('#upload');
  const notesId = createHash('sha256').update('hello admin').digest('hex');
  const notes = page.locator('#files tr', { hasText: notesId });
  await notes.waitFor({ timeout: 10000 });
  const stored = await api('GET', `/api/v1/files/${notesId}/meta`);
  expect(stored.found && stored.name === 'notes.txt' && stored.len === 11, 'SMS holds the upload: ' + JSON.stringify(stored));
  await page.locator('#stat-files', { hasText: '2' }).waitFor({ timeout: 5000 });
  console.log('ok: Choose File and Upload store files in SMS');

  const [download] = await Promise.all([page.waitForEvent('download'), notes.locator('button', { hasText: 'Download' }).click()]);
  expect(download.suggestedFilename() === 'notes.txt', 'download name: ' + download.suggestedFilename());
  const chunks = [];
  for await (const c of await download.createReadStream()) chunks.push(c);
  expect(Buffer.concat(chunks).toString() === 'hello admin', 'downloaded content');
  await notes.locator('button', { hasText: 'Copy URI' }).click();
  await page.locator('#toast', { hasText: `copied sms+file://${notesId}` }).waitFor();
  const clip = await page.evaluate(() => navigator.clipboard.readText());
  expect(clip === `sms+file://${notesId}`, 'clipboard: ' + clip);
  await notes.locator('button', { hasText: 'Delete' }).click();
  await notes.waitFor({ state: 'detached', timeout: 10000 });
  const gone = await api('GET', `/api/v1/files/${notesId}/meta`).catch(e => ({ error: String(e) }));
  expect(gone.found === false || /404/.test(gone.error || ''), 'the file is deleted: ' + JSON.stringify(gone));
  console.log('ok: Download, Copy URI and Delete act on the stored file');

  // Tasks: the form's types and schemes, Choose Local, and what SMS registers.
  await go('tasks');
  await page.click('#task-new');
  await page.locator('#task-modal[open]').waitFor();
  expect(await page.inputValue('#exec-type') === '', 'No Executable first');
  expect(!(await page.isVisible('#exec-uri')), 'no executable fields for No Executable');
  const types = await page.$$eval('#exec-type option', os => os.map(o => o.textContent));
  expect(types.join('|') === 'No Executable|Binary|Script|Container|WASM|Process', 'types: ' + types.join('|'));
  await page.selectOption('#exec-type', 'script');
  expect(await page.inputValue('#exec-uri') === 'sms+file://', 'sms+file:// prefilled');
  await page.selectOption('#exec-scheme', 'https');
  expect(await page.inputValue('#exec-uri') === 'https://', 'https:// for https');
  expect(await page.isDisabled('#choose-local'), 'Choose Local is for sms+file only');
  await page.selectOption('#exec-scheme', 'sms+file');
  expect(await page.inputValue('#exec-uri') === 'sms+file://', 'sms+file:// again');
  await page.click('#choose-local');
  await page.locator('#file-picker[open]').waitFor();
  await page.locator('#picker-files tr', { hasText: toolId }).locator('button', { hasText: 'Use' }).click();
  await page.locator('#file-picker[open]').waitFor({ state: 'detached' });
  expect(await page.inputValue('#exec-uri') === `sms+file://${toolId}`, 'Use brings the URI back');
  expect(await page.inputValue('#exec-name') === 'tool.sh', 'Use brings the name back');
  await page.fill('#task-name', 'from-admin');
  await page.selectOption('#task-priority', 'high');
  await page.fill('#exec-checksum', 'not-a-checksum');
  await page.click('#task-submit');
  await page.locator('#task-error', { hasText: 'checksum' }).waitFor({ timeout: 5000 });
  await page.fill('#exec-checksum', toolId);
  await page.click('#task-submit');
  await page.locator('#task-modal[open]').waitFor({ state: 'detached', timeout: 5000 });
  const row = page.locator('#tasks tr', { hasText: 'from-admin' });
  await row.waitFor({ timeout: 5000 });
  const taskId = await row.getAttribute('data-task');
  const task = await api('GET', '/api/v1/tasks/' + taskId);
  expect(task.priority === 'high' && task.executable.uri === `sms+file://${toolId}` && task.executable.type === 'process',
    'SMS registered the form: ' + JSON.stringify(task));
  console.log('ok: the task form prefills schemes, picks a stored file and registers the task');

  await page.click('#task-new');
  await page.fill('#task-name', 'no-executable');
  await page.click('#task-submit');
  await page.locator('#tasks tr', { hasText: 'no-executable' }).locator('td', { hasText: '(none)' }).waitFor({ timeout: 5000 });
  const none = (await api('GET', '/admin/api/tasks?q=no-executable')).tasks;
  expect(none.length === 1 && none[0].executable === null && none[0].executable_type === '', 'a task without an executable');
  await page.locator('#tasks tr', { hasText: 'no-executable' }).locator('button', { hasText: 'Unregister' }).click();
  await page.locator('#tasks tr', { hasText: 'no-executable' }).locator('td', { hasText: 'unregistered' }).waitFor({ timeout: 5000 });
  console.log('ok: a task without an executable is registered, then unregistered');

  // Executions: run the task (no node can take it yet), see it, cancel it.
  await row.locator('button', { hasText: 'Run' }).click();
  await page.locator('#toast', { hasText: 'submitted' }).waitFor({ timeout: 5000 });
  await go('executions');
  const exec = page.locator('#executions tr', { hasText: taskId });
  await exec.waitFor({ timeout: 5000 });
  await exec.locator('button', { hasText: 'Cancel' }).click();
  await exec.locator('td', { hasText: 'cancelled' }).waitFor({ timeout: 10000 });
  const listed = await api('GET', `/api/v1/executions?task_id=${taskId}`);
  expect(listed.executions.length === 1 && listed.executions[0].state === 'cancelled', 'SMS cancelled it');
  // One submitted elsewhere shows up from its event, well before the page's 10 s refresh.
  const other = await api('POST', '/api/v1/executions', { task_id: taskId });
  await page.locator('#executions tr', { hasText: other.execution_id }).waitFor({ timeout: 2500 });
  console.log('ok: an execution run from the tasks list is shown and cancelled, and the list follows new ones');

  // Plugins: the active scheduler, a reload and its record in the history.
  await go('plugins');
  await page.locator('#scheduler', { hasText: 'active scheduler' }).waitFor({ timeout: 5000 });
  await page.locator('#plugins td', { hasText: 'least-connections' }).first().waitFor();
  await page.click('#reload');
  await page.locator('#toast', { hasText: 'reload: unchanged' }).waitFor({ timeout: 5000 });
  await page.locator('#reloads tbody tr').first().locator('td', { hasText: 'api' }).waitFor({ timeout: 5000 });
  console.log('ok: the plugins page reloads and shows the reload in the history');

  // The same page at /admin, straight onto a page by its anchor.
  await page.goto(base + '/admin#tasks');
  await page.locator('#tasks td', { hasText: 'from-admin' }).waitFor({ timeout: 10000 });
  expect(await page.evaluate(() => document.documentElement.dataset.theme) === 'dark', 'the theme is kept');
  console.log('ok: /admin serves the same admin with the settings kept');
});

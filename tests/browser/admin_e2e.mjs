// The web admin end to end with a real Spearlet, in a real browser (Debian's chromium driven by
// playwright-core): the token gate; a Spearlet registering while the page is open shows up live;
// a script uploaded, listed, its URI copied and used in a task through Choose Local; the task
// run from the page and its output shown; an execution submitted from the Executions page; the
// file deleted; the settings kept across a reload.
//
//   node admin_e2e.mjs <web admin URL> <SMS_WEB_ADMIN_TOKEN>
//
// It prints `ready: …` when the page waits for a Spearlet: the test starts one then.
import { createHash } from 'node:crypto';
import { client, expect, run } from './lib.mjs';

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error('usage: node admin_e2e.mjs <web admin URL> <SMS_WEB_ADMIN_TOKEN>');
  process.exit(2);
}
const api = client(base, token);

await run(async (page, context) => {
  const status = page.locator('#status');
  const go = name => page.click(`#tabs a[data-page="${name}"]`);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });

  // The token gate, then the token from the Nodes toolbar.
  await page.goto(base + '/');
  await status.filter({ hasText: 'needs a token' }).waitFor({ timeout: 10000 });
  await page.fill('#toolbar-token', token);
  await page.press('#toolbar-token', 'Enter');
  await page.locator('#live.on').waitFor({ timeout: 10000 });
  await page.locator('#stat-total', { hasText: '0' }).waitFor();
  console.log('ok: the page asks for the token and goes live with it');

  // A Spearlet registers while the page is open: it appears without a reload.
  console.log('ready: waiting for a Spearlet');
  const node = page.locator('#nodes tbody tr.status-active');
  await node.waitFor({ timeout: 30000 });
  await page.locator('#stat-online', { hasText: '1' }).waitFor({ timeout: 5000 });
  const executors = await node.locator('td').nth(5).textContent();
  expect(executors.includes('process'), 'the node runs processes: ' + executors);
  console.log('ok: a Spearlet that registers shows up live');

  // A script: uploaded, listed, its URI copied.
  const script = '#!/bin/sh\necho "hello from the web admin: $1"\nread line\necho "stdin: $line"\n';
  const id = createHash('sha256').update(script).digest('hex');
  await go('files');
  await page.setInputFiles('#file-input', { name: 'hello.sh', mimeType: 'text/x-shellscript', buffer: Buffer.from(script) });
  await page.click('#upload');
  const file = page.locator('#files tr', { hasText: id });
  await file.waitFor({ timeout: 10000 });
  await file.locator('button', { hasText: 'Copy URI' }).click();
  const clip = await page.evaluate(() => navigator.clipboard.readText());
  expect(clip === `sms+file://${id}`, 'clipboard: ' + clip);
  console.log('ok: the script is uploaded, listed and its URI copied');

  // A task using it, picked with Choose Local.
  await go('tasks');
  await page.click('#task-new');
  await page.fill('#task-name', 'hello-admin');
  await page.selectOption('#exec-type', 'script');
  await page.click('#choose-local');
  await page.locator('#picker-files tr', { hasText: id }).locator('button', { hasText: 'Use' }).click();
  expect(await page.inputValue('#exec-uri') === clip, 'the copied URI is the one Choose Local brings');
  await page.fill('#exec-args', 'e2e');
  await page.click('#task-submit');
  const task = page.locator('#tasks tr', { hasText: 'hello-admin' });
  await task.waitFor({ timeout: 5000 });
  console.log('ok: a task is created from the stored script');

  // Run from the tasks list: the execution opens, runs on the Spearlet, and shows its output.
  await task.locator('button', { hasText: 'Run' }).click();
  const detail = page.locator('#exec-detail');
  await detail.locator('dd[data-field="state"]', { hasText: 'succeeded' }).waitFor({ timeout: 60000 });
  await page.locator('#exec-stdout', { hasText: 'hello from the web admin: e2e' }).waitFor();
  expect((await detail.locator('dd[data-field="exit"]').textContent()).startsWith('0'), 'exit 0');
  console.log('ok: the task runs from the page and its output is shown');

  // Submit from the Executions page, with standard input.
  await page.click('#exec-new');
  await page.locator('#submit-modal[open]').waitFor();
  const choice = await page.$$eval('#submit-task option', os => os.find(o => o.textContent.startsWith('hello-admin ')).value);
  await page.selectOption('#submit-task', choice);
  await page.fill('#submit-stdin', 'typed in the form\n');
  await page.click('#submit-go');
  await page.locator('#exec-stdout', { hasText: 'stdin: typed in the form' }).waitFor({ timeout: 60000 });
  const listed = await api('GET', '/api/v1/executions?state=succeeded');
  expect(listed.executions.length === 2, 'SMS ran both: ' + listed.executions.length);
  console.log('ok: an execution submitted from the Executions page runs with its input');

  // The file deleted.
  await go('files');
  await file.locator('button', { hasText: 'Delete' }).click();
  await file.waitFor({ state: 'detached', timeout: 10000 });
  expect((await api('GET', '/api/v1/files')).files.length === 0, 'no file is left');
  console.log('ok: the file is deleted');

  // Settings persist across a reload.
  await go('settings');
  await page.selectOption('#theme', 'light');
  await page.click('#settings-apply');
  await page.reload();
  await page.locator('#live.on').waitFor({ timeout: 10000 });
  expect(await page.evaluate(() => document.documentElement.dataset.theme) === 'light', 'the theme is kept');
  expect(await page.inputValue('#toolbar-token') === token, 'the token is kept');
  console.log('ok: the settings are kept across a reload');
});

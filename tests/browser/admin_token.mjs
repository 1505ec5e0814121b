// SMS's web admin with auth on, in a real browser (Debian's chromium driven by playwright-core).
//
//   node admin_token.mjs <web admin URL> <admin token>
//
// The page loads without a token and asks for one; a wrong token is refused; a reader token,
// applied from the Nodes toolbar, fills the tables and the stats cards, and the live streams,
// sent with that token, show a node registered afterwards; the reader cannot create a task; the
// token is kept in local storage (SPEAR's admin does the same) until Settings clears it.
import { client, expect, run } from './lib.mjs';

const [base, adminToken] = process.argv.slice(2);
if (!base || !adminToken) {
  console.error('usage: node admin_token.mjs <web admin URL> <admin token>');
  process.exit(2);
}
const api = client(base, adminToken);

await run(async page => {
  const status = page.locator('#status');

  // No token yet: every call is refused, and the page asks for one.
  await page.goto(base + '/admin');
  await status.filter({ hasText: 'needs a token' }).waitFor({ timeout: 10000 });
  await page.locator('#toolbar-token.attention').waitFor();
  console.log('ok: without a token the page asks for one');

  // A wrong token: refused by SMS.
  await page.fill('#toolbar-token', 'spear.nosuchid.nosuchsecret');
  await page.click('#toolbar-apply');
  await status.filter({ hasText: 'invalid token' }).waitFor({ timeout: 10000 });
  console.log('ok: a wrong token is refused');

  // A reader token: the cards and tables fill.
  await api('POST', '/api/v1/nodes', { ip_address: '127.0.0.1', port: 7, metadata: { name: 'first' } });
  const { token: reader } = await api('POST', '/api/v1/tokens', { name: 'browser', role: 'reader' });
  await page.fill('#toolbar-token', reader);
  await page.click('#toolbar-apply');
  await status.filter({ hasText: 'updated' }).waitFor({ timeout: 10000 });
  await page.locator('#nodes td', { hasText: 'first' }).waitFor({ timeout: 10000 });
  await page.locator('#stat-total', { hasText: '1' }).waitFor({ timeout: 10000 });
  await page.click('#tabs a[data-page="plugins"]');
  await page.locator('#plugins td', { hasText: 'least-connections' }).first().waitFor({ timeout: 10000 });
  console.log('ok: a reader token shows the stats, nodes and plugins');

  // The live streams carry the token too: a node registered now shows up in the events, and in
  // the cards and the nodes table without waiting for the periodic refresh.
  await page.click('#tabs a[data-page="nodes"]');
  await page.locator('#live.on').waitFor({ timeout: 10000 });
  const node = await api('POST', '/api/v1/nodes', { ip_address: '127.0.0.1', port: 9 });
  await page.locator('#nodes td', { hasText: node.node_uuid }).waitFor({ timeout: 4000 });
  await page.locator('#stat-total', { hasText: '2' }).waitFor({ timeout: 4000 });
  await page.click('#tabs a[data-page="events"]');
  await page.locator('#events td', { hasText: node.node_uuid }).first().waitFor({ timeout: 10000 });
  console.log('ok: the node stream and the event stream show a new node');

  // A reader may not register a task: the form says why and stays open.
  await page.click('#tabs a[data-page="tasks"]');
  await page.click('#task-new');
  await page.fill('#task-name', 'not-allowed');
  await page.click('#task-submit');
  await page.locator('#task-error', { hasText: 'operator or admin' }).waitFor({ timeout: 10000 });
  expect(await page.locator('#task-modal').isVisible(), 'the form stays open');
  await page.click('#task-cancel');
  console.log('ok: a reader cannot register a task, and is told why');

  // The token is kept in local storage: a reload still works; Settings clears it.
  const kept = await page.evaluate(() => localStorage.getItem('spear-admin-token'));
  expect(kept === reader, 'token storage: ' + kept);
  await page.goto(base + '/#nodes');
  await page.locator('#nodes td', { hasText: 'first' }).waitFor({ timeout: 10000 });
  await page.click('#tabs a[data-page="settings"]');
  expect(await page.inputValue('#settings-token') === reader, 'Settings shows the token');
  await page.click('#settings-clear');
  await status.filter({ hasText: 'needs a token' }).waitFor({ timeout: 10000 });
  const cleared = await page.evaluate(() => localStorage.getItem('spear-admin-token'));
  expect(cleared === null, 'the token is cleared: ' + cleared);
  console.log('ok: the token is kept across reloads until Settings clears it');
});

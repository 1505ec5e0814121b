// SMS's web admin with auth on, in a real browser (Debian's chromium driven by playwright-core).
//
//   node admin_token.mjs <web admin URL> <admin token>
//
// The page loads without a token and asks for one; a wrong token is refused and the form stays;
// a reader token (made here through the API with the admin token) fills the tables, and the live
// event stream, sent with that token, shows a node registered afterwards. Exits non-zero with
// the reason on the first thing that does not hold.
import { chromium } from 'playwright-core';

const [base, adminToken] = process.argv.slice(2);
if (!base || !adminToken) {
  console.error('usage: node admin_token.mjs <web admin URL> <admin token>');
  process.exit(2);
}

async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { Authorization: 'Bearer ' + adminToken, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let page;
try {
  page = await browser.newPage();
  const status = page.locator('#status');
  const login = page.locator('#login');

  // No token yet: every call is refused, and the page asks for one.
  await page.goto(base + '/');
  await status.filter({ hasText: 'needs a token' }).waitFor({ timeout: 10000 });
  await login.waitFor({ state: 'visible' });
  console.log('ok: without a token the page asks for one');

  // A wrong token: refused by SMS, the form comes back.
  await page.fill('#token', 'spear.nosuchid.nosuchsecret');
  await page.click('#login button');
  await status.filter({ hasText: 'invalid token' }).waitFor({ timeout: 10000 });
  await login.waitFor({ state: 'visible' });
  console.log('ok: a wrong token is refused');

  // A reader token: the tables fill, and the form goes away.
  const { token: reader } = await api('POST', '/api/v1/tokens', { name: 'browser', role: 'reader' });
  await page.fill('#token', reader);
  await page.click('#login button');
  await status.filter({ hasText: 'scheduler:' }).waitFor({ timeout: 10000 });
  await login.waitFor({ state: 'hidden' });
  await page.locator('#nodes td', { hasText: 'last heartbeat' }).first().waitFor();
  await page.locator('#plugins td', { hasText: 'least-connections' }).first().waitFor();
  console.log('ok: a reader token shows the nodes, tasks and plugins');

  // The live event stream carries the token too: a node registered now shows up in it, and in
  // the nodes table at the next refresh.
  const node = await api('POST', '/api/v1/nodes', { ip_address: '127.0.0.1', port: 9 });
  const uuid = node.uuid || node.node_uuid;
  if (!uuid) throw new Error('no uuid in ' + JSON.stringify(node));
  await page.locator('#events td', { hasText: 'node.registered' }).first().waitFor({ timeout: 10000 });
  await page.locator('#nodes td', { hasText: uuid }).first().waitFor({ timeout: 10000 });
  console.log('ok: the event stream and the nodes table show a new node');

  // The token is kept for this tab only (sessionStorage), never in localStorage.
  const kept = await page.evaluate(() => [sessionStorage.getItem('spear-token'), localStorage.length]);
  if (kept[0] !== reader || kept[1] !== 0) throw new Error('token storage: ' + JSON.stringify(kept));
  console.log('ok: the token stays in this tab');
} catch (e) {
  console.error('FAILED: ' + (e.stack || e));
  if (page) console.error('page status: ' + (await page.locator('#status').textContent().catch(() => '?')));
  await browser.close();
  process.exit(1);
}
await browser.close();

// What the browser tests share: Debian's chromium driven by playwright-core, a REST client for
// the SMS under test, and a runner that prints `ok: …` per step and exits non-zero with the
// reason (and the page's status line) on the first step that does not hold.
import { chromium } from 'playwright-core';

/** A REST client for `base`, sending `token` (if any) as a bearer token. */
export function client(base, token) {
  return async function api(method, path, body, headers = {}) {
    const h = Object.assign({}, headers);
    if (token) h.Authorization = 'Bearer ' + token;
    let payload;
    if (body instanceof Uint8Array || typeof body === 'string') payload = body;
    else if (body !== undefined) {
      payload = JSON.stringify(body);
      h['content-type'] = 'application/json';
    }
    const r = await fetch(base + path, { method, headers: h, body: payload });
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    return r.json();
  };
}

/** Launch chromium, open a page and run `steps(page, context)`; exit 1 on the first failure. */
export async function run(steps) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  let page;
  try {
    const context = await browser.newContext({ acceptDownloads: true });
    page = await context.newPage();
    // Confirmations (delete, unregister) are answered yes.
    page.on('dialog', d => d.accept());
    await steps(page, context);
  } catch (e) {
    console.error('FAILED: ' + (e.stack || e));
    if (page) console.error('page status: ' + (await page.locator('#status').textContent().catch(() => '?')));
    await browser.close();
    process.exit(1);
  }
  await browser.close();
}

/** Throw `what` unless `cond`. */
export function expect(cond, what) {
  if (!cond) throw new Error(what);
}

// Drives the operators' dashboard in Debian's Chromium through playwright-core (never a
// downloaded browser). Run by tests/browser.rs, which serves the dashboard, runs a worker and
// passes: DASHBOARD_URL, DASHBOARD_TOKEN, BATCH_ID, FAILED_PAYEE, EXPECT_PROGRESS (e.g.
// "4 / 4 settled"), SCREENSHOT (a PNG path) and CHROMIUM (the browser binary).
// Prints one line per check and "DASHBOARD E2E OK" last; exits 1 on the first failed check.
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`env ${name} is not set`);
  return v;
};
const url = env('DASHBOARD_URL');
const token = env('DASHBOARD_TOKEN');
const batch = env('BATCH_ID');
const payee = env('FAILED_PAYEE');
const expectProgress = env('EXPECT_PROGRESS');
const shot = env('SCREENSHOT');

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let code = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);

  // 1. No token, no dashboard.
  let res = await page.goto(`${url}/`);
  check(res.status() === 401, `GET / without a token answers 401 (got ${res.status()})`);
  console.log('no token: 401');

  // 2. Log in: the cookie is HttpOnly and SameSite=Strict, and we land on the batch list.
  res = await page.goto(`${url}/login?token=${encodeURIComponent(token)}`);
  check(res.status() === 200, `login lands on a page (got ${res.status()})`);
  check(new URL(page.url()).pathname === '/', `login redirects to / (at ${page.url()})`);
  const cookie = (await context.cookies()).find((c) => c.name === 'payrun_token');
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict', 'cookie is HttpOnly, SameSite=Strict');
  console.log('login: cookie set, HttpOnly, SameSite=Strict');

  // 3. The batch's progress and failed count on the list.
  const row = page.locator(`tr[data-batch="${batch}"]`);
  const settled = (await row.locator('.settled').innerText()).trim();
  check(settled === expectProgress, `progress reads "${expectProgress}" (got "${settled}")`);
  const bar = row.locator('progress');
  check((await bar.count()) === 1, 'a progress bar is shown');
  const failedBadge = (await row.locator('a.st-failed').innerText()).trim();
  check(failedBadge === 'failed 1', `the failed count shows (got "${failedBadge}")`);
  console.log(`progress: ${settled}; ${failedBadge}`);

  // 4. Open the batch, filter to failed items, click Rerun on the failed one.
  await row.locator(`a[href="/batches/${batch}"]`).click();
  await page.waitForURL(`**/batches/${batch}`);
  await page.locator(`a[href="/batches/${batch}?state=failed"]`).first().click();
  await page.waitForURL('**state=failed');
  const failedRow = page.locator(`tr[data-payee="${payee}"]`);
  check((await page.locator('tbody tr').count()) === 1, 'the failed filter shows one item');
  await Promise.all([
    page.waitForURL('**msg=*'),
    failedRow.getByRole('button', { name: 'Rerun', exact: true }).click(),
  ]);
  const flash = (await page.locator('.flash').innerText()).trim();
  check(flash.startsWith(`rerun 1 item (${payee})`), `flash confirms the rerun (got "${flash}")`);
  console.log(`clicked Rerun: "${flash}"`);

  // 5. The worker picks it up: reload (bounded, ~20 s) until it waits on its payee again.
  let state = '';
  const deadline = Date.now() + 20_000;
  let reloads = 0;
  while (Date.now() < deadline) {
    await page.goto(`${url}/batches/${batch}`);
    reloads += 1;
    state = await page.locator(`tr[data-payee="${payee}"]`).getAttribute('data-state');
    if (state === 'awaiting_payout') break;
    await new Promise((r) => setTimeout(r, 250));
  }
  check(state === 'awaiting_payout', `${payee} reaches awaiting_payout within 20 s (is ${state})`);
  console.log(`${payee}: awaiting_payout after ${reloads} load(s)`);

  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  console.log('DASHBOARD E2E OK');
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);

#!/usr/bin/env node
// End-to-end test of berth's web UI against a real server, in headless Chromium.
//
//   node ui/e2e/run.mjs --url http://127.0.0.1:PORT --token TOKEN [--screenshots docs/screenshots]
//
// Expects the scripted mock LLM upstream: a new task prompt gets a shell tool call
// (`echo hi > hello.txt`) then the text `DONE`; a prompt containing "SLOW" is held open.
// Exit code 0 on success; otherwise the failed step is printed and the exit code is 1.

import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

function parseArgs(argv) {
  const out = { url: process.env.BERTH_URL, token: process.env.BERTH_TOKEN, screenshots: 'docs/screenshots' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) fail('usage', `${a} needs a value`);
      return argv[++i];
    };
    if (a === '--url') out.url = next();
    else if (a === '--token') out.token = next();
    else if (a === '--viewer-token') out.viewerToken = next();
    else if (a === '--screenshots') out.screenshots = next();
    else if (a === '--headed') out.headed = true;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node ui/e2e/run.mjs --url http://127.0.0.1:PORT --token TOKEN [--screenshots DIR]');
      process.exit(0);
    } else fail('usage', `unknown argument ${a}`);
  }
  if (!out.url || !out.token) fail('usage', 'need --url and --token (or BERTH_URL / BERTH_TOKEN)');
  out.url = out.url.replace(/\/+$/, '');
  return out;
}

let currentStep = 'start';
const started = Date.now();
const consoleLines = [];
let browser;

function fail(step, message) {
  console.error(`\nE2E FAILED at step "${step}": ${message}`);
  if (consoleLines.length) {
    console.error('--- last browser console lines ---');
    for (const l of consoleLines.slice(-25)) console.error(l);
  }
  process.exit(1);
}

async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  process.stdout.write(`• ${name} … `);
  try {
    const r = await fn();
    console.log(`ok (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
    return r;
  } catch (e) {
    console.log('FAILED');
    await cleanup();
    fail(name, e && e.message ? e.message.split('\n').slice(0, 6).join('\n') : String(e));
  }
}

async function cleanup() {
  try {
    await browser?.close();
  } catch {
    /* ignore */
  }
}

const args = parseArgs(process.argv.slice(2));
const shots = resolve(args.screenshots);
mkdirSync(shots, { recursive: true });

// Fail within ~4 minutes overall, whatever hangs.
const TOTAL_MS = 240_000;
const watchdog = setTimeout(async () => {
  await cleanup();
  fail(currentStep, `overall time limit of ${TOTAL_MS / 1000}s exceeded`);
}, TOTAL_MS);
watchdog.unref();

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };
const tid = (id) => `[data-testid="${id}"]`;

// chromium.launch() gives every run a new, empty temporary user-data-dir (removed on close).
const launchArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

browser = await step('launch chromium', () =>
  chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: !args.headed, args: launchArgs }),
);
const context = await browser.newContext({ viewport: DESKTOP, deviceScaleFactor: 1 });
context.setDefaultTimeout(20_000);
const page = await context.newPage();
page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));

async function shot(name) {
  await page.waitForTimeout(300); // let the layout settle
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

async function goto(hash) {
  await page.goto(`${args.url}/#${hash}`);
}


// The API as the admin token sees it (to assert what a click did).
async function apiGet(path, token = args.token) {
  const r = await page.request.get(`${args.url}/api/v1${path}`, { headers: { Authorization: `Bearer ${token}` } });
  return { status: r.status(), body: r.status() === 200 ? await r.json() : undefined, text: await r.text() };
}
const DEMO_WS = encodeURIComponent('demo/e2e');
const SECRET_VALUE = 'e2e-secret-value-do-not-show-8f3a';

// ---------------------------------------------------------------------------------------------

await step('open the UI and sign in', async () => {
  await page.goto(`${args.url}/`);
  await page.locator(tid('signin-token')).fill(args.token);
  await page.locator(tid('signin-submit')).click();
  await page.locator(`${tid('nav-workspaces')}, ${tid('signin-error')}`).first().waitFor({ timeout: 15_000 });
  const err = await page.locator(tid('signin-error')).count();
  if (err) throw new Error(`sign-in refused: ${await page.locator(tid('signin-error')).innerText()}`);
  if (page.url().includes(args.token)) throw new Error('the token appears in the URL');
});

const row = page.locator(tid('ws-row-demo-e2e'));

await step('create workspace demo/e2e (memory 2g, pids 2048)', async () => {
  await goto('/workspaces');
  await page.locator(`${tid('ws-table')}, .empty`).first().waitFor();
  if ((await row.count()) > 0) return; // re-run against the same server
  await page.locator(tid('ws-create-toggle')).click();
  await page.locator(tid('ws-create-name')).fill('e2e');
  await page.locator(tid('ws-create-tenant')).fill('demo');
  await page.locator(tid('ws-create-memory')).fill('2g');
  await page.locator(tid('ws-create-pids')).fill('2048');
  await page.locator(tid('ws-create-submit')).click();
  await Promise.race([
    row.waitFor({ timeout: 90_000 }),
    page
      .locator(`${tid('ws-create-form')} ${tid('error')}`)
      .waitFor({ timeout: 90_000 })
      .then(async () => {
        throw new Error(`create failed: ${await page.locator(`${tid('ws-create-form')} ${tid('error')}`).innerText()}`);
      }),
  ]);
});

await step('workspace shows running', async () => {
  await page.locator(`${tid('ws-row-demo-e2e')}[data-state="running"]`).waitFor({ timeout: 90_000 });
  await page.locator(`${tid('ws-row-demo-e2e')} ${tid('ws-usage')}`).waitFor({ timeout: 20_000 });
  await shot('workspaces-desktop');
});

async function startTask(prompt) {
  await goto('/tasks/new');
  const sel = page.locator(tid('task-new-workspace'));
  await sel.waitFor();
  await sel.selectOption('demo/e2e');
  await page.locator(tid('task-new-agent')).selectOption('claude');
  await page.locator(tid('task-new-prompt')).fill(prompt);
  await page.locator(tid('task-new-submit')).click();
  await page.waitForURL(/#\/tasks\/(?!new)[^/?]+/, { timeout: 30_000 }).catch(async () => {
    const e = page.locator(tid('error'));
    throw new Error((await e.count()) ? `task creation failed: ${await e.first().innerText()}` : 'did not reach the task page');
  });
  return decodeURIComponent(page.url().split('#/tasks/')[1].split('?')[0]);
}

const ev = (type) => page.locator(`${tid('task-event')}[data-type="${type}"]`);
const stateIs = (s) => page.locator(`${tid('task-state')}[data-state="${s}"]`);

async function assertNotFailed() {
  const st = await page.locator(tid('task-state')).getAttribute('data-state');
  if (st === 'failed' || st === 'cancelled') {
    const r = page.locator(tid('task-reason'));
    throw new Error(`task is ${st}${(await r.count()) ? `: ${await r.innerText()}` : ''}`);
  }
}

async function waitOrFail(locator, timeout, what) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if ((await locator.count()) > 0) return;
    await assertNotFailed();
    await page.waitForTimeout(250);
  }
  throw new Error(`timed out after ${timeout / 1000}s waiting for ${what}`);
}

let taskId;
let sawLiveBeforeDone = false;
await step('start a claude task', async () => {
  taskId = await startTask('Create hello.txt, then say DONE.');
  await page.locator(tid('task-header')).waitFor();
});

await step('see the tool_call, then the final message DONE, state completed (live)', async () => {
  await waitOrFail(ev('tool_call'), 60_000, 'a tool_call event');
  // Was the task still in progress when the tool call showed up? (It streamed in live.)
  sawLiveBeforeDone = (await stateIs('completed').count()) === 0;
  const call = await ev('tool_call').first().innerText();
  if (!/hello\.txt/.test(call)) throw new Error(`the tool call does not mention hello.txt: ${call.slice(0, 200)}`);
  await waitOrFail(ev('message').filter({ hasText: 'DONE' }), 60_000, 'an assistant message containing DONE');
  await waitOrFail(stateIs('completed'), 60_000, 'state completed');
  const stream = await page.locator(tid('task-stream-status')).innerText();
  if (stream !== 'live') throw new Error(`event stream is not live: ${stream}`);
  // Deltas were replaced by the final message: DONE is shown once per assistant turn.
  if ((await ev('message_delta').count()) > 0) throw new Error('streaming fragments are still shown after the final message');
});

await step('send a follow-up: second user message and completion', async () => {
  const input = page.locator(tid('followup-input'));
  await input.fill('Thanks! Now say DONE again.');
  await page.locator(tid('followup-send')).click();
  await waitOrFail(ev('user_message').nth(1), 30_000, 'the second user message');
  const completed = page.locator(`${tid('task-event')}[data-type="status"] [data-state="completed"]`);
  await waitOrFail(completed.nth(1), 60_000, 'the second turn to complete');
  await waitOrFail(stateIs('completed'), 30_000, 'state completed');
  await shot('task-desktop');
});

await step('reload the task page: replay without duplicates', async () => {
  const before = await page.locator(tid('task-event')).evaluateAll((els) => els.map((e) => e.getAttribute('data-seq')));
  await page.reload();
  await stateIs('completed').waitFor();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="task-event"]').length >= n, before.length, { timeout: 20_000 });
  await page.waitForTimeout(500);
  const after = await page.locator(tid('task-event')).evaluateAll((els) => els.map((e) => e.getAttribute('data-seq')));
  if (new Set(after).size !== after.length) throw new Error(`duplicate events after reload: ${after.join(',')}`);
  if (after.length !== before.length) throw new Error(`expected ${before.length} events after reload, got ${after.length}`);
});

await step('open the diff view', async () => {
  await page.locator(tid('task-tab-diff')).click();
  await page.locator(tid('task-diff')).waitFor();
  await page
    .locator(`${tid('diff-text')}, ${tid('diff-empty')}, ${tid('task-diff')} ${tid('error')}`)
    .first()
    .waitFor({ timeout: 20_000 });
  const err = page.locator(`${tid('task-diff')} ${tid('error')}`);
  if (await err.count()) throw new Error(`diff failed: ${await err.innerText()}`);
});

await step('Push on the task page: the refusal the server gives (the task ran outside git)', async () => {
  await page.locator(tid('task-push-open')).click();
  await page.locator(tid('task-push-branch')).fill('e2e-branch');
  await page.locator(tid('task-push-confirm')).click();
  const err = page.locator(tid('task-deliver-error'));
  await waitOrFail(err, 30_000, 'the push answer');
  const text = await err.innerText();
  if (!text.includes('not in git')) throw new Error(`unexpected push answer: ${text}`);
  if (await page.locator(tid('task-push')).count()) throw new Error('a push is shown although it failed');
  await page.locator(tid('task-pr-open')).waitFor();
});

await step('attach and detach an egress template on the workspace page', async () => {
  await goto(`/workspaces/${encodeURIComponent('demo/e2e')}`);
  await page.locator(`${tid('egress-template-pick')} option[value="npm"]`).waitFor({ state: 'attached' });
  await page.locator(tid('egress-template-pick')).selectOption('npm');
  await page.locator(tid('egress-template-attach')).click();
  await page.locator(`${tid('egress-rules')} li[data-source="template"]`).filter({ hasText: 'allow registry.npmjs.org:443' }).waitFor();
  await page.locator(`${tid('egress-templates')} button[aria-label="Detach template npm"]`).click();
  await page.locator(tid('egress-templates')).waitFor({ state: 'detached' });
  if (await page.locator(`${tid('egress-rules')} li[data-source="template"]`).count()) throw new Error('template rules still shown after detach');
});

let sessionName;
await step('open a terminal (new session) and run a command', async () => {
  await goto(`/workspaces/${encodeURIComponent('demo/e2e')}`);
  await page.locator(tid('session-new')).click();
  await page.waitForURL(/\/terminal\//, { timeout: 20_000 });
  sessionName = decodeURIComponent(page.url().split('/terminal/')[1]);
  await page.locator(`${tid('terminal-status')}:has-text("connected")`).waitFor({ timeout: 20_000 });
  await page.locator(`${tid('terminal')} .xterm-rows`).waitFor();
  await page.waitForTimeout(800); // let the shell print its prompt
  await page.locator(tid('terminal')).click();
  await page.keyboard.type('echo e2e-$((40+2))');
  await page.keyboard.press('Enter');
  await page.locator(`${tid('terminal')} .xterm-rows`).filter({ hasText: 'e2e-42' }).waitFor({ timeout: 20_000 });
  await shot('terminal-desktop');
});

await step('the Claude Code button opens its TUI in a terminal, through the gateway', async () => {
  await goto(`/workspaces/${encodeURIComponent('demo/e2e')}`);
  await page.locator(tid('session-new-claude')).click();
  await page.waitForURL(/\/terminal\/claude/, { timeout: 20_000 });
  const rows = page.locator(`${tid('terminal')} .xterm-rows`);
  await rows.filter({ hasText: 'bypass permissions' }).waitFor({ timeout: 90_000 });
  await page.waitForTimeout(1000);
  await page.locator(tid('terminal')).click();
  await page.keyboard.type('Say hello from the browser');
  await page.waitForTimeout(500);
  await page.keyboard.press('Enter');
  await rows.filter({ hasText: 'DONE' }).waitFor({ timeout: 90_000 });
});

await step('a finished task continues interactively', async () => {
  await goto(`/tasks/${encodeURIComponent(taskId)}`);
  await stateIs('completed').waitFor();
  await page.locator(tid('task-continue-interactive')).click();
  await page.waitForURL(/\/terminal\/task-/, { timeout: 20_000 });
  await page.locator(`${tid('terminal')} .xterm-rows`).filter({ hasText: 'bypass permissions' }).waitFor({ timeout: 90_000 });
});

let slowId;
await step('start a SLOW task and cancel it', async () => {
  slowId = await startTask('SLOW: take your time with this one.');
  await page.locator(tid('task-state')).waitFor();
  // Wait until the agent is actually working (not merely queued).
  await waitOrFail(page.locator(`${tid('task-state')}[data-state="running"]`), 60_000, 'state running');
  await page.locator(tid('task-cancel')).click();
  await page.locator(tid('task-cancel-confirm')).click();
  await stateIs('cancelled').waitFor({ timeout: 30_000 });
  if (await page.locator(tid('followup-send')).isEnabled()) throw new Error('follow-up still enabled on a cancelled task');
});

await step('tasks list shows both tasks', async () => {
  await goto('/tasks');
  await page.locator(`${tid(`task-row-${taskId}`)}[data-state="completed"]`).waitFor();
  await page.locator(`${tid(`task-row-${slowId}`)}[data-state="cancelled"]`).waitFor();
  await shot('tasks-desktop');
});

await step('secrets page: set a secret; the value is write-only', async () => {
  await page.setViewportSize(DESKTOP);
  await goto('/secrets');
  await page.locator(tid('secret-form')).waitFor();
  await page.locator(tid('secret-tenant')).fill('demo');
  await page.locator(tid('secret-name')).fill('e2e_token');
  await page.locator(tid('secret-value')).fill(SECRET_VALUE);
  await page.locator(tid('secret-set')).click();
  await page.locator(tid('secret-demo-E2E_TOKEN')).waitFor();
  if ((await page.locator(tid('secret-value')).inputValue()) !== '') throw new Error('the value is still in the form after saving');
  const secrets = await apiGet('/secrets?tenant=demo');
  const s = (secrets.body ?? []).find((x) => x.name === 'E2E_TOKEN' && x.tenant === 'demo');
  if (!s) throw new Error(`the API does not list demo/E2E_TOKEN: ${secrets.text.slice(0, 300)}`);
  if (secrets.text.includes(SECRET_VALUE)) throw new Error('the API returned the secret value');
  if ((await page.content()).includes(SECRET_VALUE)) throw new Error('the page shows the secret value');
  await page.locator(tid('secret-rotate-E2E_TOKEN')).click();
  await page.locator(tid('secret-new-value-E2E_TOKEN')).fill(`${SECRET_VALUE}-2`);
  await page.locator(tid('secret-save-E2E_TOKEN')).click();
  await page.locator(tid('secret-rotate-E2E_TOKEN')).waitFor();
  const after = (await apiGet('/secrets?tenant=demo')).body.find((x) => x.name === 'E2E_TOKEN');
  if (!(Date.parse(after.updated_at) > Date.parse(s.updated_at))) throw new Error(`rotating did not change updated_at (${s.updated_at})`);
  await shot('secrets-desktop');
});

await step('budgets page: set a workspace budget, shown with its current spend', async () => {
  await goto('/budgets');
  await page.locator(tid('budget-form')).waitFor();
  await page.locator(tid('budget-scope')).selectOption('workspace');
  await page.locator(`${tid('budget-target')} option[value="demo/e2e"]`).waitFor({ state: 'attached' });
  await page.locator(tid('budget-target')).selectOption('demo/e2e');
  await page.locator(tid('budget-period')).selectOption('month');
  await page.locator(tid('budget-tokens')).fill('5000000');
  await page.locator(tid('budget-cost')).fill('3.5');
  await page.locator(tid('budget-set')).click();
  const row = page.locator(tid('budget-workspace-demo-e2e'));
  await row.waitFor();
  const b = ((await apiGet('/budgets')).body ?? []).find((x) => x.scope === 'workspace' && x.target === 'demo/e2e');
  if (!b) throw new Error('the API does not list the workspace budget');
  if (b.period !== 'month' || b.max_tokens !== 5000000 || b.max_cost_usd !== 3.5) throw new Error(`budget is ${JSON.stringify(b)}`);
  // The tasks above went through the gateway: the spend is there, and the page shows the API's figure.
  if (!(b.spent_tokens > 0)) throw new Error(`no spend recorded for demo/e2e this month: ${JSON.stringify(b)}`);
  const cell = await row.locator(tid('budget-tokens-cell')).innerText();
  if (!cell.includes(b.spent_tokens.toLocaleString('en-US'))) throw new Error(`the page shows "${cell}", the API ${b.spent_tokens} tokens spent`);
  await shot('budgets-desktop');
});

await step('egress templates page: create, attach, edit rules, detach', async () => {
  await goto('/egress');
  await page.locator(tid('etpl-form')).waitFor();
  await page.locator(tid('etpl-tenant')).fill('demo');
  await page.locator(tid('etpl-name')).fill('e2e-apis');
  await page.locator(tid('etpl-description')).fill('APIs the e2e test may reach');
  await page.locator(tid('etpl-rules')).fill('allow api.e2e.example:443\n\ndeny *.e2e.example\n');
  await page.locator(tid('etpl-create')).click();
  const item = page.locator(tid('etpl-demo-e2e-apis'));
  await item.waitFor();
  let t = (await apiGet('/egress/templates/demo/e2e-apis')).body;
  if (JSON.stringify(t?.rules) !== JSON.stringify(['allow api.e2e.example:443', 'deny *.e2e.example'])) throw new Error(`rules are ${JSON.stringify(t?.rules)}`);
  await page.locator(`${tid('etpl-attach-pick-demo-e2e-apis')} option[value="demo/e2e"]`).waitFor({ state: 'attached' });
  await page.locator(tid('etpl-attach-pick-demo-e2e-apis')).selectOption('demo/e2e');
  await page.locator(tid('etpl-attach-demo-e2e-apis')).click();
  await page.locator(tid('etpl-used-demo-e2e-apis-demo-e2e')).waitFor();
  const attached = (await apiGet(`/workspaces/${DEMO_WS}/egress/templates`)).body.map((x) => x.name);
  if (!attached.includes('e2e-apis')) throw new Error(`demo/e2e attaches ${attached.join(', ')}`);
  await page.locator(tid('etpl-edit-demo-e2e-apis')).click();
  await page.locator(tid('etpl-edit-rules-demo-e2e-apis')).fill('allow api.e2e.example:443\nallow uploads.e2e.example:443');
  await page.locator(tid('etpl-save-demo-e2e-apis')).click();
  await item.locator(tid('etpl-rules-demo-e2e-apis')).filter({ hasText: 'uploads.e2e.example' }).waitFor();
  t = (await apiGet('/egress/templates/demo/e2e-apis')).body;
  if (JSON.stringify(t.rules) !== JSON.stringify(['allow api.e2e.example:443', 'allow uploads.e2e.example:443'])) throw new Error(`edited rules are ${JSON.stringify(t.rules)}`);
  // Live in the workspace using it.
  const eff = (await apiGet(`/workspaces/${DEMO_WS}/egress/effective`)).body;
  if (!eff.rules.some((r) => r.template === 'e2e-apis' && r.rule.includes('uploads.e2e.example'))) throw new Error('the edit is not in the workspace\'s effective rules');
  await page.locator(`${tid('etpl-demo-e2e-apis')} button[aria-label="Detach e2e-apis from demo/e2e"]`).click();
  await page.locator(tid('etpl-used-demo-e2e-apis-demo-e2e')).waitFor({ state: 'detached' });
  const still = (await apiGet(`/workspaces/${DEMO_WS}/egress/templates`)).body.map((x) => x.name);
  if (still.includes('e2e-apis')) throw new Error('still attached after detach');
  await page.locator(tid('etpl-demo-e2e-apis')).scrollIntoViewIfNeeded();
  await shot('egress-templates-desktop');
});

await step('phone-size screenshots (375x812)', async () => {
  await page.setViewportSize(PHONE);
  await goto('/workspaces');
  await page.locator(`${tid('ws-row-demo-e2e')}[data-state="running"]`).waitFor();
  await page.locator(`${tid('ws-row-demo-e2e')} ${tid('ws-usage')}`).waitFor();
  await shot('workspaces-phone');
  await goto(`/tasks/${encodeURIComponent(taskId)}`);
  await stateIs('completed').waitFor();
  await ev('message').first().waitFor();
  await shot('task-phone');
  await goto(`/workspaces/${encodeURIComponent('demo/e2e')}/terminal/${encodeURIComponent(sessionName)}`);
  await page.locator(`${tid('terminal')} .xterm-rows`).filter({ hasText: 'e2e-42' }).waitFor({ timeout: 20_000 });
  await shot('terminal-phone');
  // The key bar: Ctrl-C interrupts a running command; a latched Ctrl applies to the next key.
  await page.locator(tid('terminal-keybar')).waitFor();
  await page.locator(tid('terminal')).click();
  await page.keyboard.type('sleep 600');
  await page.keyboard.press('Enter');
  await page.locator(tid('key-ctrl-c')).click();
  await page.keyboard.type('echo kb-$((40+2))');
  await page.keyboard.press('Enter');
  await page.locator(`${tid('terminal')} .xterm-rows`).filter({ hasText: 'kb-42' }).waitFor({ timeout: 10_000 });
  await page.keyboard.type('sleep 600');
  await page.keyboard.press('Enter');
  await page.locator(tid('key-ctrl')).click();
  await page.keyboard.type('c');
  await page.keyboard.type('echo ctrl-$((6*7))');
  await page.keyboard.press('Enter');
  await page.locator(`${tid('terminal')} .xterm-rows`).filter({ hasText: 'ctrl-42' }).waitFor({ timeout: 10_000 });
  await goto(`/workspaces/${encodeURIComponent('demo/e2e')}`);
  await page.locator(tid('session-new-opencode')).waitFor();
  const wsOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (wsOverflow > 2) throw new Error(`the workspace page overflows the phone width by ${wsOverflow}px`);
  await goto('/tasks');
  await page.locator(tid(`task-row-${taskId}`)).waitFor();
  await shot('tasks-phone');
  // Nothing may overflow the phone viewport horizontally.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) throw new Error(`the tasks page overflows the phone width by ${overflow}px`);
});

await step('every page fits a phone (375 px, no horizontal scroll)', async () => {
  await page.setViewportSize(PHONE);
  const pages = [
    ['/workspaces', tid('ws-row-demo-e2e')],
    [`/workspaces/${encodeURIComponent('demo/e2e')}`, tid('ws-detail')],
    ['/tasks', tid(`task-row-${taskId}`)],
    [`/tasks/${encodeURIComponent(taskId)}`, tid('task-state')],
    [`/tasks/${encodeURIComponent(taskId)}?tab=diff`, tid('task-diff')],
    ['/tasks/new', 'main h1'],
    ['/inbox', 'main h1'],
    ['/notifications', 'main h1'],
    ['/usage', 'main h1'],
    ['/audit', 'main h1'],
    ['/tokens', 'main h1'],
    ['/tenants', 'main h1'],
    ['/users', 'main h1'],
    ['/secrets', tid('secret-demo-E2E_TOKEN')],
    ['/budgets', tid('budget-workspace-demo-e2e')],
    ['/egress', tid('etpl-demo-e2e-apis')],
  ];
  // Every nav entry is visible on a phone, none hidden behind a sideways scroll.
  await goto('/workspaces');
  for (const a of await page.locator('.topbar nav a').all()) {
    const box = await a.boundingBox();
    if (!box || box.x < 0 || box.x + box.width > PHONE.width + 1) throw new Error(`nav entry "${await a.innerText()}" is off screen on a phone`);
  }
  for (const [hash, ready] of pages) {
    await goto(hash);
    await page.locator(ready).first().waitFor();
    await page.waitForTimeout(300);
    const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (over > 2) {
      // Name the widest offenders, so a failure says what to fix.
      const wide = await page.evaluate(() => {
        const name = (el) => `${el.tagName.toLowerCase()}.${el.className}[${el.getAttribute('data-testid') ?? ''}]`;
        const out = [...document.querySelectorAll('body *')]
          .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 2)
          // the outermost offenders: their parent still fits
          .filter((el) => !el.parentElement || el.parentElement.getBoundingClientRect().right <= window.innerWidth + 2)
          .slice(0, 4)
          .map((el) => `${name(el)} "${(el.textContent ?? '').slice(0, 60)}"`);
        // Text can spill out of a box whose own rectangle fits.
        const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let n = walk.nextNode(); n && out.length < 8; n = walk.nextNode()) {
          const r = document.createRange();
          r.selectNodeContents(n);
          if (r.getBoundingClientRect().right > window.innerWidth + 2) out.push(`text in ${name(n.parentElement)} "${n.textContent.slice(0, 60)}"`);
        }
        return out;
      });
      throw new Error(`${hash} overflows the phone width by ${over}px: ${wide.join('; ')}`);
    }
    const phoneShot = { '/secrets': 'secrets-phone', '/budgets': 'budgets-phone', '/egress': 'egress-templates-phone' }[hash];
    if (phoneShot) await shot(phoneShot);
  }
});

await step('a denied egress attempt is an access request in the inbox; approve once at phone width', async () => {
  await page.setViewportSize(PHONE);
  const r = await page.request.post(`${args.url}/api/v1/workspaces/${DEMO_WS}/exec`, {
    headers: { Authorization: `Bearer ${args.token}` },
    data: { cmd: ['sh', '-c', 'curl -sS -m 5 http://ui-denied.test/ ; true'] },
  });
  if (r.status() !== 200) throw new Error(`exec: ${r.status()} ${await r.text()}`);
  await goto('/inbox');
  const card = page.locator(`${tid('access-request')}[data-state="open"]`).filter({ hasText: 'ui-denied.test:80' });
  await card.waitFor();
  const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (over > 2) throw new Error(`the inbox overflows the phone width by ${over}px`);
  await card.locator(tid('access-once')).click();
  await card.waitFor({ state: 'detached' });
  const approved = await apiGet('/access-requests?state=approved');
  const a = (approved.body ?? []).find((x) => x.host === 'ui-denied.test');
  if (!a || a.scope !== 'once' || !a.expires_at) throw new Error(`not approved once: ${approved.text}`);
});

await step('a task waiting for approval shows up live in the inbox; approving at phone width lets it continue', async () => {
  await page.setViewportSize(PHONE);
  await goto('/inbox');
  await page.locator('main h1').waitFor();
  // Started after the page is open: the card must arrive by itself.
  const r = await page.request.post(`${args.url}/api/v1/tasks`, {
    headers: { Authorization: `Bearer ${args.token}` },
    data: { workspace: 'demo/e2e', agent: 'claude', prompt: 'Create hello.txt, then say DONE.', approval: 'on-request' },
  });
  if (r.status() !== 201) throw new Error(`task: ${r.status()} ${await r.text()}`);
  const id = (await r.json()).id;
  const card = page.locator(`${tid('approval')}[data-task="${id}"][data-state="pending"]`);
  await card.waitFor({ timeout: 60_000 });
  const title = await card.locator('h3').innerText();
  if (!/hello\.txt/.test(title)) throw new Error(`the request does not say what it runs: ${title}`);
  const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (over > 2) throw new Error(`the inbox overflows the phone width by ${over}px`);
  await shot('inbox-approval-phone');
  await card.locator(tid('approval-approve')).click();
  await card.waitFor({ state: 'detached', timeout: 30_000 });
  const deadline = Date.now() + 60_000;
  let t;
  while (Date.now() < deadline) {
    t = await apiGet(`/tasks/${id}`);
    if (t.body && ['completed', 'failed', 'cancelled'].includes(t.body.state)) break;
    await page.waitForTimeout(500);
  }
  if (t.body?.state !== 'completed') throw new Error(`the approved task did not complete: ${t.text}`);
  const approvals = await apiGet(`/tasks/${id}/approvals`);
  const a = approvals.body?.[0];
  if (!a || a.state !== 'approved') throw new Error(`not approved: ${approvals.text}`);
  const events = await apiGet(`/tasks/${id}/events?limit=500`);
  if (!(events.body ?? []).some((e) => e.type === 'tool_result')) throw new Error('the approved tool did not run');
});

await step('a terminal on a missing workspace says so (not a close code)', async () => {
  await goto(`/workspaces/${encodeURIComponent('demo/no-such-ws')}/terminal/main`);
  await page.locator(`${tid('terminal-error')}:has-text("Workspace not found")`).waitFor({ timeout: 10_000 });
  await page.setViewportSize(DESKTOP);
});

await step('a stopped workspace: its terminal says so and offers Start; its page has Start', async () => {
  const ref = encodeURIComponent('demo/e2e');
  const stop = await page.request.post(`${args.url}/api/v1/workspaces/${ref}/stop`, { headers: { Authorization: `Bearer ${args.token}` } });
  if (!stop.ok()) throw new Error(`stop: HTTP ${stop.status()}`);
  await goto(`/workspaces/${ref}/terminal/main`);
  await page.locator(`${tid('terminal-error')}:has-text("Workspace is stopped")`).waitFor({ timeout: 10_000 });
  await page.locator(tid('terminal-start-workspace')).click();
  // Started: the terminal attaches again, or says the session is gone (it died with the container).
  try {
    await page
      .locator(`${tid('terminal-status')}:has-text("connected"), ${tid('terminal-error')}:has-text("not found in this workspace")`)
      .first()
      .waitFor({ timeout: 60_000 });
  } catch {
    const shown = await page.locator(`${tid('terminal-error')}, ${tid('terminal-status')}`).allInnerTexts();
    throw new Error(`after Start the terminal shows: ${shown.join(' | ')}`);
  }
  const stop2 = await page.request.post(`${args.url}/api/v1/workspaces/${ref}/stop`, { headers: { Authorization: `Bearer ${args.token}` } });
  if (!stop2.ok()) throw new Error(`stop: HTTP ${stop2.status()}`);
  await goto(`/workspaces/${ref}`);
  await page.locator(tid('ws-detail-start')).click();
  await page.locator(`${tid('ws-detail-state')}[data-state="running"]`).waitFor({ timeout: 60_000 });
});

await step('remember this device: a new tab is signed in; signing out revokes the device token', async () => {
  await page.locator(tid('signout')).click();
  await page.locator(tid('signin-token')).fill(args.token);
  await page.locator(tid('signin-remember')).check();
  await page.locator(tid('signin-submit')).click();
  await page.locator(tid('nav-workspaces')).waitFor();
  const stored = await page.evaluate(() => ({ device: localStorage.getItem('berth.device'), tab: sessionStorage.getItem('berth.token') }));
  if (!stored.device || stored.device === args.token) throw new Error('the browser does not keep a token of its own');
  if (stored.tab) throw new Error('the pasted token is still kept');
  const tab = await context.newPage();
  await tab.goto(`${args.url}/#/workspaces`);
  await tab.locator(tid('nav-workspaces')).waitFor({ timeout: 10_000 });
  await tab.close();
  await page.locator(tid('signout')).click();
  await page.locator(tid('signin-token')).waitFor();
  const r = await page.request.get(`${args.url}/api/v1/whoami`, { headers: { Authorization: `Bearer ${stored.device}` } });
  if (r.status() !== 401) throw new Error(`the device token still works after signing out (HTTP ${r.status()})`);
  if (await page.evaluate(() => localStorage.getItem('berth.device'))) throw new Error('the device token is still stored');
  await page.locator(tid('signin-token')).fill(args.token);
  await page.locator(tid('signin-submit')).click();
  await page.locator(tid('nav-workspaces')).waitFor();
});

await step('tokens page (admin): create a viewer token of demo, shown once', async () => {
  await page.setViewportSize(DESKTOP);
  await goto('/tokens');
  await page.locator(tid('token-form')).waitFor();
  await page.locator(tid('token-name')).fill('e2e-viewer');
  await page.locator(tid('token-role')).selectOption('viewer');
  await page.locator(tid('token-tenant')).fill('demo');
  await page.locator(tid('token-create')).click();
  const value = (await page.locator(tid('token-value')).innerText()).trim();
  if (!value.startsWith('berth_')) throw new Error(`no token shown: ${value}`);
  await page.locator(tid('token-e2e-viewer')).waitFor();
  await shot('tokens-desktop');
  args.viewerToken = args.viewerToken || value;
});

await step('a viewer sees who it is and no controls it may not use (phone width)', async () => {
  await page.setViewportSize(PHONE);
  await page.locator(tid('signout')).click();
  await page.locator(tid('signin-token')).fill(args.viewerToken);
  await page.locator(tid('signin-submit')).click();
  await page.locator(tid('whoami')).filter({ hasText: 'viewer · demo' }).waitFor();
  await goto('/workspaces');
  await page.locator(`${tid('ws-row-demo-e2e')}`).waitFor();
  for (const hidden of ['ws-create-toggle', 'ws-stop-demo-e2e', 'ws-delete-demo-e2e', 'nav-tokens', 'nav-new-task']) {
    if ((await page.locator(tid(hidden)).count()) > 0) throw new Error(`a viewer sees ${hidden}`);
  }
  await shot('workspaces-viewer-phone');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) throw new Error(`the viewer's workspaces page overflows the phone width by ${overflow}px`);
});

/** Signs the page out and in again with `token`, waiting for the header to name `who`. */
async function signInAs(token, who) {
  await page.locator(tid('signout')).click();
  await page.locator(tid('signin-token')).fill(token);
  await page.locator(tid('signin-submit')).click();
  await page.locator(tid('whoami')).filter({ hasText: who }).waitFor();
}

/** Fails when any of the test ids is on the page. */
async function noneOf(role, ids) {
  for (const id of ids) if ((await page.locator(tid(id)).count()) > 0) throw new Error(`a ${role} sees ${id}`);
}

await step('a viewer reads budgets and egress templates, without controls; no secrets page', async () => {
  await goto('/budgets');
  await page.locator(tid('budget-workspace-demo-e2e')).waitFor();
  await noneOf('viewer', ['budget-form', 'budget-edit-workspace-demo-e2e', 'budget-remove-workspace-demo-e2e', 'nav-secrets']);
  await goto('/egress');
  await page.locator(tid('etpl-demo-e2e-apis')).waitFor();
  await noneOf('viewer', ['etpl-form', 'etpl-edit-demo-e2e-apis', 'etpl-delete-demo-e2e-apis', 'etpl-attach-pick-demo-e2e-apis']);
});

await step('a member lists secrets (names and bindings) but cannot change secrets, budgets or egress templates', async () => {
  const r = await page.request.post(`${args.url}/api/v1/tokens`, {
    headers: { Authorization: `Bearer ${args.token}` },
    data: { name: 'e2e-member', role: 'member', tenant: 'demo', expires_in: '1h' },
  });
  if (r.status() !== 201) throw new Error(`creating a member token: HTTP ${r.status()}`);
  await signInAs((await r.json()).token, 'member · demo');
  await goto('/secrets');
  await page.locator(tid('secret-demo-E2E_TOKEN')).waitFor();
  await noneOf('member', ['secret-form', 'secret-rotate-E2E_TOKEN', 'secret-delete-E2E_TOKEN']);
  if ((await page.content()).includes(SECRET_VALUE)) throw new Error('the secrets page shows the value');
  await goto('/budgets');
  await page.locator(tid('budget-workspace-demo-e2e')).waitFor();
  await noneOf('member', ['budget-form', 'budget-remove-workspace-demo-e2e']);
  await goto('/egress');
  await page.locator(tid('etpl-demo-e2e-apis')).waitFor();
  await noneOf('member', ['etpl-form', 'etpl-edit-demo-e2e-apis', 'etpl-delete-demo-e2e-apis']);
});

await step('an admin deletes the egress template, the budget and the secret', async () => {
  await page.setViewportSize(DESKTOP);
  await signInAs(args.token, 'admin');
  await goto('/egress');
  await page.locator(tid('etpl-delete-demo-e2e-apis')).click();
  await page.locator(tid('etpl-delete-confirm')).click();
  await page.locator(tid('etpl-demo-e2e-apis')).waitFor({ state: 'detached' });
  if ((await apiGet('/egress/templates/demo/e2e-apis')).status !== 404) throw new Error('the template is still there');
  await goto('/budgets');
  await page.locator(tid('budget-remove-workspace-demo-e2e')).click();
  await page.locator(tid('budget-workspace-demo-e2e')).waitFor({ state: 'detached' });
  if ((await apiGet('/budgets')).body.some((b) => b.target === 'demo/e2e')) throw new Error('the budget is still there');
  await goto('/secrets');
  await page.locator(tid('secret-delete-E2E_TOKEN')).click();
  await page.locator(tid('secret-delete-confirm')).click();
  await page.locator(tid('secret-demo-E2E_TOKEN')).waitFor({ state: 'detached' });
  if ((await apiGet('/secrets?tenant=demo')).body.some((x) => x.name === 'E2E_TOKEN')) throw new Error('the secret is still there');
});

await step('no Content-Security-Policy violations', async () => {
  // The server sends a strict CSP: anything the UI needs that it blocks shows up here.
  const blocked = consoleLines.filter((l) => /Content Security Policy/i.test(l));
  if (blocked.length) throw new Error(`CSP blocked:\n${blocked.join('\n')}`);
});

await cleanup();
clearTimeout(watchdog);
console.log(
  `\nE2E PASSED in ${((Date.now() - started) / 1000).toFixed(1)}s` +
    `${sawLiveBeforeDone ? ' (events streamed in live)' : ''}; screenshots in ${shots}`,
);
process.exit(0);

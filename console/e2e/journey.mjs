// The console, end to end, in headless Chromium (playwright-core with the
// system's chromium), against a running hookrelay:
//   node e2e/journey.mjs BASE_URL AGENT_SERVER_URL AGENT_BINARY FIXTURE SCREENSHOT_DIR
// BASE_URL serves the console (the HTTP listener, or Envoy's single port);
// the agent streams from AGENT_SERVER_URL. Exits non-zero on the first failed
// check, naming it.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { launch, openPage, pageHeading } from "./browser.mjs";

const [base, agentServer, agentBinary, fixturePath, shots] = process.argv.slice(2);
const WAIT = 15_000;

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

// A local target, as a CI server would run: 404 while "broken" (a typo in its route).
let broken = true;
const received = [];
const target = createServer((request, response) => {
  const chunks = [];
  request.on("data", (c) => chunks.push(c));
  request.on("end", () => {
    if (broken) {
      response.writeHead(404).end("no such route");
      return;
    }
    received.push({ delivery: request.headers["x-github-delivery"], body: Buffer.concat(chunks) });
    response.writeHead(200).end("ok");
  });
});
await new Promise((resolve) => target.listen(0, "127.0.0.1", resolve));
const targetUrl = `http://127.0.0.1:${target.address().port}/hook`;

const browser = await launch();
const problems = [];
let agent;

async function newPage(context) {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      problems.push(`console ${message.type()}: ${message.text()} (${message.location()?.url ?? ""})`);
    }
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    // Watches are aborted on purpose when a page is left.
    const aborted = request.failure()?.errorText === "net::ERR_ABORTED" && request.url().includes("/hookrelay.v1.EventService/Watch");
    if (!aborted) problems.push(`request failed: ${request.method()} ${request.url()} ${request.failure()?.errorText}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400 && !response.url().endsWith("/redeliver")) problems.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  return page;
}


async function signUp(page, name) {
  await page.goto(`${base}/`);
  check(page.url() === `${base}/console/`, `/ redirects to /console/ (got ${page.url()})`);
  await page.getByRole("heading", { name: "Sign in to hookrelay" }).waitFor();
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByLabel("Organisation name").fill(name);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByText("Save this now.").waitFor();
  const clientId = await page.locator('[data-secret="Client ID"]').textContent();
  const clientSecret = await page.locator('[data-secret="Client secret"]').textContent();
  check(clientId.startsWith("hrc_") || clientId.length > 10, "a client id is shown");
  await page.getByRole("button", { name: /continue/ }).click();
  await pageHeading(page, "Repositories").waitFor();
  return { clientId, clientSecret };
}

let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  page = await newPage(context);
  const tenant = await signUp(page, "acme");
  await page.getByText("Register a repository to get a webhook URL.").waitFor();

  // Sign out forgets everything; sign in again with the shown credentials.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to hookrelay" }).waitFor();
  const stored = await page.evaluate(() => localStorage.length + sessionStorage.length + document.cookie.length);
  check(stored === 0, "nothing is stored in the browser");
  await page.goto(`${base}/console/#/events`);
  await page.getByRole("heading", { name: "Sign in to hookrelay" }).waitFor();
  await page.getByLabel("Client ID").fill(tenant.clientId);
  await page.getByLabel("Client secret").fill("wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("The client ID or secret is wrong").waitFor();
  problems.length = 0; // the 401 above was the point
  // By keyboard alone: Tab from the client ID to the secret, Enter to sign in.
  await page.getByLabel("Client ID").focus();
  await page.keyboard.press("Tab");
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.type(tenant.clientSecret);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: /^Events/ }).waitFor();

  // Register a repository: the URL and secret once, with GitHub's settings.
  await openPage(page, "Repositories");
  await page.getByLabel("Repository").fill("acme/app");
  await page.getByRole("button", { name: "Register" }).click();
  await page.getByText("Content type:").waitFor();
  const webhookUrl = await page.locator('[data-secret="Payload URL"]').textContent();
  await page.locator(".secret", { hasText: "Payload URL" }).getByRole("button", { name: "Copy" }).click();
  check((await page.evaluate(() => navigator.clipboard.readText())) === webhookUrl, "Copy puts the URL on the clipboard");
  const secret = await page.locator('[data-secret="Secret"]').textContent();
  check(webhookUrl.includes("/v1/webhooks/"), "the webhook URL is shown");

  // An agent delivers to the (broken) target.
  agent = spawn(
    agentBinary,
    ["--server", agentServer, "--token-url", `${base}/oauth/token`, "--client-id", tenant.clientId, "--consumer", "ci", "--target", targetUrl],
    { env: { ...process.env, HOOKRELAY_CLIENT_SECRET: tenant.clientSecret }, stdio: ["ignore", "ignore", "inherit"] },
  );

  // A signed webhook appears live.
  await openPage(page, "Events");
  await page.getByText("live", { exact: true }).waitFor();
  const body = readFileSync(fixturePath);
  // Signed as GitHub signs it; the event id hookrelay answers.
  const post = async (event, delivery) => {
    const answer = await fetch(webhookUrl, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery,
        "x-hub-signature-256": `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`,
      },
      body,
    });
    check(answer.status === 202, `the webhook is accepted (${answer.status})`);
    return (await answer.json()).event_id;
  };
  const posted = Date.now();
  const eventId = await post("push", "console-1");
  await page.locator(`tr[data-event-id="${eventId}"]`).waitFor({ timeout: 3_000 });
  const shownAfter = Date.now() - posted;
  await page.screenshot({ path: `${shots}/console-events.png` });

  // Its delivery failed (404); fix the target and redeliver.
  await page.locator(`tr[data-event-id="${eventId}"] a`).click();
  await page.getByRole("heading", { name: /push/ }).waitFor();
  // The event says which repository it came from; the header, whose tenant this is.
  await page.locator("dl.facts dd", { hasText: "acme/app" }).waitFor();
  check((await page.locator("header .who").textContent()).startsWith("tenant "), "the header names the tenant");
  const row = page.locator('tr[data-consumer="ci"]');
  await row.locator(".outcome.failed").waitFor({ timeout: WAIT });
  check((await row.textContent()).includes("404"), "the 404 is shown");
  await page.getByRole("button", { name: "Copy as curl" }).waitFor();
  // The consumer counts it; the Failed deliveries page redelivers it from its row.
  await openPage(page, "Consumers");
  await page.locator('[data-consumer="ci"] [data-failed-count]', { hasText: "1 failed for good" }).waitFor({ timeout: WAIT });
  await openPage(page, "Failed deliveries");
  broken = false;
  await page.locator(`tr[data-failed="ci-${eventId}"]`).getByRole("button", { name: "Redeliver" }).click();
  await page.getByRole("status").getByText("Asked for 1 redelivery").waitFor();
  await page.getByRole("link", { name: `push #${eventId}` }).click();
  await page.locator('tr[data-consumer="ci"] .outcome.delivered').waitFor({ timeout: WAIT });
  check(received.length === 1 && received[0].body.equals(body), "the target got the exact body once");
  await page.screenshot({ path: `${shots}/console-event.png`, fullPage: true });

  // Consumers: ci, connected, nothing pending.
  await openPage(page, "Consumers");
  const consumer = page.locator('[data-consumer="ci"]');
  await consumer.getByText("connected", { exact: true }).waitFor({ timeout: WAIT });
  await consumer.locator("td.pending", { hasText: "0" }).waitFor({ timeout: WAIT });
  // Seek back to the start: the agent delivers the event once more.
  await consumer.getByLabel(/Continue after event/).fill("0");
  // A seek asks first, saying what 0 means.
  let asked = "";
  page.once("dialog", (dialog) => {
    asked = dialog.message();
    dialog.accept();
  });
  await consumer.getByRole("button", { name: "Seek" }).click();
  await consumer.getByText("Moved: ci continues after event 0 (from the start").waitFor();
  check(asked.includes("from the start"), `the seek asks first (${asked})`);
  const deadline = Date.now() + WAIT;
  while (received.length < 2 && Date.now() < deadline) await page.waitForTimeout(50);
  check(received.length === 2, `a seek to 0 replays the event (${received.length} received)`);

  // Events: filter by type, pause and resume.
  await openPage(page, "Events");
  await page.getByText("live", { exact: true }).waitFor();
  const issue = await post("issues", "console-2");
  await page.locator(`tr[data-event-id="${issue}"]`).waitFor({ timeout: WAIT });
  await page.getByLabel("Event type").selectOption("issues");
  await page.locator(`tr[data-event-id="${eventId}"]`).waitFor({ state: "detached" });
  await page.getByLabel("Event type").selectOption("");
  await page.locator(`tr[data-event-id="${eventId}"]`).waitFor();
  await page.getByRole("button", { name: "Pause" }).click();
  const held = await post("push", "console-3");
  await page.getByRole("button", { name: "Resume (1 new)" }).waitFor({ timeout: WAIT });
  check((await page.locator(`tr[data-event-id="${held}"]`).count()) === 0, "paused: the new event waits");
  await page.getByRole("button", { name: "Resume (1 new)" }).click();
  await page.locator(`tr[data-event-id="${held}"]`).waitFor();

  // Clients: an agent's read-only client, secret once.
  await openPage(page, "Clients");
  await page.getByLabel("Name").fill("laptop agent");
  await page.getByRole("button", { name: "Create client" }).click();
  await page.getByText("The secret is shown only once.").waitFor();
  await page.getByRole("cell", { name: "laptop agent" }).waitFor();

  // Trusted issuers: GitHub Actions' tokens for one repository's main branch,
  // then no longer trusted.
  await openPage(page, "Trusted issuers");
  await page.getByLabel("Audience").fill("hookrelay-acme");
  await page.getByLabel("Claims").fill("repository=acme/deploy-bot\nref=refs/heads/main");
  await page.getByRole("button", { name: "Trust issuer" }).click();
  await page.getByRole("cell", { name: "hookrelay-acme" }).waitFor();
  await page.getByText("repository=acme/deploy-bot").waitFor();
  await page.screenshot({ path: `${shots}/console-trusted-issuers.png` });
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: "Delete" }).click();
  await page.getByText("No trusted issuers.").waitFor();

  // Usage: the quotas and what the tenant holds (one repository so far).
  await openPage(page, "Usage");
  const repositoriesRow = page.locator('tr[data-quota="repositories"]');
  await repositoriesRow.waitFor();
  const cells = await repositoriesRow.locator("td").allTextContents();
  check(cells[1] === "1" && Number(cells[2]) >= 1, `the Usage page shows the repositories held and their quota (${cells})`);

  // Another provider: GitLab with a signing token, and GitLab's own steps.
  await openPage(page, "Repositories");
  await page.getByLabel("Provider").selectOption("gitlab");
  await page.getByLabel("Repository").fill("acme/platform/app");
  await page.getByLabel("Signing token").check();
  await page.getByRole("button", { name: "Register" }).click();
  await page.getByText("Signing token: the secret above").waitFor();
  const gitlabSecret = await page.locator('[data-secret="Secret"]').textContent();
  check(gitlabSecret.startsWith("whsec_"), "GitLab's secret is a whsec_ signing token");
  await page.getByRole("cell", { name: "GitLab" }).waitFor();

  // A phone-sized window: no page scrolls sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  await openPage(page, "Events");
  await page.locator(`tr[data-event-id="${eventId}"]`).waitFor();
  const views = {
    events: "Events",
    [`events/${eventId}`]: `push #${eventId}`,
    consumers: "Consumers",
    repositories: "Repositories",
    clients: "Clients",
    "trusted-issuers": "Trusted issuers",
    failed: "Failed deliveries",
    usage: "Usage",
  };
  for (const [view, name] of Object.entries(views)) {
    await page.goto(`${base}/console/#/${view}`);
    await pageHeading(page, name).waitFor();
    await page.waitForTimeout(400); // its data, loaded after the heading
    // Reached by hash, so the session (in memory) is still there.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `no sideways scrolling on a phone on #/${view} (${overflow}px)`);
    // The navigation is one line, the same height on every page.
    const nav = await page.getByRole("navigation").boundingBox();
    check(nav.height <= 40, `the navigation is one line on #/${view} (${nav.height}px)`);
  }
  // Every action and column is on screen, each value under its column's name.
  const onScreen = async (locator, what) => {
    await locator.scrollIntoViewIfNeeded();
    const box = await locator.boundingBox();
    check(box && box.x >= 0 && box.x + box.width <= 390, `${what} is on screen on a phone (${JSON.stringify(box)})`);
  };
  await page.goto(`${base}/console/#/repositories`);
  await pageHeading(page, "Repositories").waitFor();
  await onScreen(page.getByRole("button", { name: "Rotate secret" }).first(), "Rotate secret");
  await onScreen(page.getByRole("button", { name: "Delete" }).first(), "a repository's Delete");
  await page.goto(`${base}/console/#/clients`);
  await pageHeading(page, "Clients").waitFor();
  await onScreen(page.locator('td[data-label="Scopes"]').first(), "a client's scopes");
  await onScreen(page.locator('td[data-label="Created"]').first(), "a client's creation time");
  await onScreen(page.getByRole("button", { name: "Delete" }).first(), "a client's Delete");
  await page.goto(`${base}/console/#/consumers`);
  await pageHeading(page, "Consumers").waitFor();
  await onScreen(page.locator('td[data-label="Seek"]').first(), "a consumer's Seek");
  await page.goto(`${base}/console/#/events/${eventId}`);
  await pageHeading(page, `push #${eventId}`).waitFor();
  const status = page.locator('table.deliveries td[data-label="Status"]').first();
  await status.waitFor();
  await onScreen(status, "a delivery's status, labelled");
  await page.screenshot({ path: `${shots}/phone-event.png` });

  // A second tenant sees none of it.
  const other = await browser.newContext();
  const otherPage = await newPage(other);
  await signUp(otherPage, "globex");
  await openPage(otherPage, "Events");
  await otherPage.getByText("No events yet.").waitFor();
  await openPage(otherPage, "Consumers");
  await otherPage.getByText("No consumer yet.").waitFor();
  await otherPage.goto(`${base}/console/#/events/${eventId}`);
  await otherPage.getByText("Not found").waitFor();
  problems.splice(0, problems.length, ...problems.filter((p) => !p.includes(`/v1/events/${eventId}`)));

  check(problems.length === 0, `no console errors or failed requests:\n${problems.join("\n")}`);
  console.log(JSON.stringify({ event_id: eventId, shown_after_ms: shownAfter }));
} catch (error) {
  // What the page showed when it failed, and what went wrong before.
  const shown = await page?.locator("body").innerText().catch(() => "") ?? "";
  console.error(`${error.stack}\n--- the page showed:\n${shown}\n--- problems so far:\n${problems.join("\n")}`);
  process.exitCode = 1;
} finally {
  agent?.kill("SIGTERM");
  await browser.close();
  target.close();
}

// The console signed in with an agent's client, which holds events:read only (the
// client the Clients page recommends for an agent), in headless Chromium:
//   node e2e/readonly.mjs BASE_URL CLIENT_ID CLIENT_SECRET REPOSITORY_ID SCREENSHOT_DIR
// The Events page goes live and lists the event by its repository's id (names need
// repos:read, which it says), with no error; the Consumers page loads too.
import { check, launch, openPage, pageHeading, watchedPage } from "./browser.mjs";

const [base, clientId, clientSecret, repositoryId, shots] = process.argv.slice(2);
const WAIT = 20_000;

const browser = await launch();
const problems = [];
let page;
try {
  page = await watchedPage(browser, problems);
  await page.goto(`${base}/console/`);
  await page.getByLabel("Client ID").fill(clientId);
  await page.getByLabel("Client secret").fill(clientSecret);
  await page.getByRole("button", { name: "Sign in" }).click();
  await pageHeading(page, "Events").waitFor();
  await page.locator("h1 .badge", { hasText: "live" }).waitFor({ timeout: WAIT });
  await page.locator(`tr[data-event-id] >> text=${repositoryId}`).first().waitFor({ timeout: WAIT });
  await page.getByText("their names need the repos:read scope").waitFor();
  check((await page.getByRole("alert").count()) === 0, "no error on the Events page");
  await page.screenshot({ path: `${shots}/readonly-events.png` });

  await openPage(page, "Consumers");
  check((await page.getByRole("alert").count()) === 0, "no error on the Consumers page");
  check(problems.length === 0, problems.join("\n"));
  console.log("events:read alone: Events live, Consumers loaded");
} catch (error) {
  if (page) await page.screenshot({ path: `${shots}/readonly-failure.png` }).catch(() => {});
  throw error;
} finally {
  await browser.close();
}

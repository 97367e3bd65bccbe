// A repository's recovery in the console, in headless Chromium, against a
// running hookrelay and a stand-in of GitHub's API that has logged one
// delivery hookrelay missed:
//   node e2e/recovery.mjs BASE_URL CLIENT_ID CLIENT_SECRET REPOSITORY API_URL TOKEN SCREENSHOT_DIR
// Signs in, gives the repository provider access (a wrong token first),
// reads the hook doctor, presses Recover now and waits for the missed
// delivery to be recovered. Exits non-zero on the first failed check.
import { check, launch, openPage, watchedPage } from "./browser.mjs";

const [base, clientId, clientSecret, repository, apiUrl, token, shots] = process.argv.slice(2);
const WAIT = 20_000;

const browser = await launch();
const problems = [];
let page;
try {
  page = await watchedPage(browser, problems, (text) => text.includes("422") || text.includes("404"));
  await page.goto(`${base}/console/#/repositories`);
  await page.getByLabel("Client ID").fill(clientId);
  await page.getByLabel("Client secret").fill(clientSecret);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: /^Events/ }).waitFor();
  await openPage(page, "Repositories");
  await page.getByRole("row", { name: new RegExp(repository) }).getByRole("link", { name: "Recovery" }).click();
  await page.getByRole("heading", { level: 1, name: `Recovery of ${repository}` }).waitFor();
  await page.getByText("No provider access yet").waitFor();

  // A wrong token: GitHub's 401, said in words; nothing saved.
  await page.getByLabel("Token", { exact: true }).fill("not-a-token");
  await page.getByLabel("API URL").fill(apiUrl);
  await page.getByRole("button", { name: "Save and check" }).click();
  const refusal = page.getByRole("alert");
  await refusal.waitFor({ timeout: WAIT });
  check((await refusal.textContent()).includes("401"), `the refusal names GitHub's 401 (${await refusal.textContent()})`);

  // The right token: saved, its hook found, the doctor finds nothing wrong.
  await page.getByLabel("Token", { exact: true }).fill(token);
  await page.getByRole("button", { name: "Save and check" }).click();
  await page.locator("dd.hook-id").waitFor({ timeout: WAIT });
  await page.getByText("No problems: the hook posts here").waitFor({ timeout: WAIT });
  check((await page.getByLabel("Token", { exact: true }).inputValue()) === "", "the token is cleared once saved");

  // Recover now: the missed delivery is asked for again and arrives.
  await page.getByRole("button", { name: "Recover now" }).click();
  await page.getByText("Started.").waitFor();
  const run = page.locator("tr[data-recovery]").first();
  await run.locator("td.outcome", { hasText: "done" }).waitFor({ timeout: WAIT });
  // The page follows the run until what it asked for has arrived.
  await run.locator("td.recovered", { hasText: "1" }).waitFor({ timeout: WAIT });
  const recovered = await run.locator("td.recovered").textContent();
  check(recovered === "1", `the run shows the delivery recovered (${recovered})`);
  check((await page.locator("tr[data-recovery] td.asked").first().textContent()) === "1", "one redelivery asked");
  await page.screenshot({ path: `${shots}/console-recovery.png`, fullPage: true });

  // A phone-sized window: the page does not scroll sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no sideways scrolling on a phone (${overflow}px)`);
  check(problems.length === 0, `no page errors: ${problems.join("; ")}`);
  console.log("recovery in the console: access refused then saved, doctor clean, 1 missed delivery recovered");
} catch (error) {
  if (page) await page.screenshot({ path: `${shots}/console-recovery-failure.png`, fullPage: true }).catch(() => {});
  console.error(error.message);
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}

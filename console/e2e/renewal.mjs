// The console renews its token before it expires, and its live view survives
// the old token's end:
//   node e2e/renewal.mjs BASE_URL FIXTURE TOKEN_TTL_SECONDS
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { launch, openPage, pageHeading } from "./browser.mjs";

const [base, fixturePath, ttl] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage();
  const tokens = [];
  page.on("response", (r) => r.url().endsWith("/oauth/token") && tokens.push(r.status()));
  await page.goto(`${base}/console/#/signup`);
  await page.getByLabel("Organisation name").fill("renewal");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByRole("button", { name: /continue/ }).click();
  await pageHeading(page, "Repositories").waitFor();
  await page.getByLabel("Repository").fill("acme/app");
  await page.getByRole("button", { name: "Register" }).click();
  const webhookUrl = await page.locator('[data-secret="Payload URL"]').textContent();
  const secret = await page.locator('[data-secret="Secret"]').textContent();
  await openPage(page, "Events");
  await page.getByText("live", { exact: true }).waitFor();

  // Past the first token's life: still signed in, and live.
  await page.waitForTimeout(Number(ttl) * 1000 * 1.6);
  if (tokens.filter((s) => s === 200).length < 2) throw new Error(`the token was not renewed: ${tokens}`);
  const body = readFileSync(fixturePath);
  const answer = await fetch(webhookUrl, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-github-event": "push",
      "x-github-delivery": "after-renewal",
      "x-hub-signature-256": `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`,
    },
    body,
  });
  const { event_id: id } = await answer.json();
  await page.locator(`tr[data-event-id="${id}"]`).waitFor({ timeout: 10_000 });
  await openPage(page, "Repositories");
  await page.getByRole("cell", { name: "acme/app" }).waitFor();
  if (await page.getByText("Sign in to hookrelay").count()) throw new Error("signed out by the token's expiry");
  console.log(JSON.stringify({ token_requests: tokens }));
} finally {
  await browser.close();
}

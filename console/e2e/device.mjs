// `hookrelay-agent login` approved in the console, in headless Chromium:
//   node e2e/device.mjs BASE_URL AGENT_BINARY CLIENT_ID CLIENT_SECRET CONFIG_HOME SCREENSHOT_DIR
// Starts the real agent's login, opens the address it prints (RFC 8628's
// verification_uri_complete) signed out, signs in, checks what the page says
// asks (device name, scopes), approves, and waits for the agent to store its
// login; then the Clients page marks the new client as a device. Exits
// non-zero on the first failed check.
import { spawn } from "node:child_process";
import { check, launch, openPage, watchedPage } from "./browser.mjs";

const [base, agent, clientId, clientSecret, home, shots] = process.argv.slice(2);
const WAIT = 20_000;

const login = spawn(agent, ["login", "--server", base, "--name", "ci laptop"], {
  env: { ...process.env, XDG_CONFIG_HOME: home },
  stdio: ["ignore", "pipe", "pipe"],
});
let output = "";
login.stdout.on("data", (chunk) => (output += chunk));
login.stderr.on("data", (chunk) => (output += chunk));
const exited = new Promise((resolve) => login.on("exit", resolve));
const deadline = Date.now() + WAIT;
let url;
while (!(url = output.match(/https?:\/\/\S+\/console\/device\?user_code=[A-Z-]+/)?.[0])) {
  check(Date.now() < deadline, `the agent prints the approval address:\n${output}`);
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const code = url.split("user_code=")[1];

const browser = await launch();
const problems = [];
let page;
try {
  page = await watchedPage(browser, problems);
  // Signed out: sign in first, then the device page, with the code filled in.
  await page.goto(url);
  await page.getByLabel("Client ID").fill(clientId);
  await page.getByLabel("Client secret").fill(clientSecret);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Approve a device" }).waitFor();
  const details = page.locator(".panel dl");
  await details.waitFor({ timeout: WAIT });
  const shown = await details.textContent();
  check(shown.includes("ci laptop"), `the device's name is shown (${shown})`);
  check(shown.includes("events:read"), `the scopes asked for are shown (${shown})`);
  check(shown.includes(code), `the code is shown to compare (${shown})`);
  check(shown.includes("127.0.0.1"), `where the request came from is shown (${shown})`);
  await page.screenshot({ path: `${shots}/device-approve.png` });
  await page.getByRole("button", { name: "Approve" }).click();
  await page.getByRole("status").getByText(/^Approved: ci laptop/).waitFor({ timeout: WAIT });

  // The agent gets its tokens and stores the login.
  const status = await Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve("timeout"), WAIT))]);
  check(status === 0, `hookrelay-agent login exits 0 (${status}):\n${output}`);
  check(output.includes('Logged in to') && output.includes('"ci laptop"'), `the agent says it logged in:\n${output}`);

  // The Clients page marks the device's client.
  await openPage(page, "Clients");
  const row = page.getByRole("row", { name: /ci laptop/ });
  await row.waitFor({ timeout: WAIT });
  check((await row.textContent()).includes("device"), "the client is marked as a device");
  await page.screenshot({ path: `${shots}/device-client.png` });
  check(problems.length === 0, problems.join("\n"));
  console.log(`approved ${code}; the agent logged in`);
} catch (error) {
  if (page) await page.screenshot({ path: `${shots}/device-failure.png` }).catch(() => {});
  console.error(output);
  throw error;
} finally {
  login.kill();
  await browser.close();
}

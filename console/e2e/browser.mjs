// What the browser scripts share: the headless Chromium they drive, and the
// way they move between the console's pages.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

// Follows a link in the navigation and waits until that page is the one shown, so
// that the page being left cannot answer a lookup meant for the new one (the Events
// page's Repository filter for the Repositories page's Repository field, say).
export async function openPage(page, name) {
  await page.getByRole("navigation").getByRole("link", { name, exact: true }).click();
  await pageHeading(page, name).waitFor();
}

// A page's own heading, by the page's name in the navigation. The Events heading
// also holds the live/paused state.
export function pageHeading(page, name) {
  return page.getByRole("heading", { level: 1, name: name === "Events" ? /^Events/ : name });
}

// A failed check: the script exits non-zero with what was expected.
export function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

// A desktop-sized page whose errors (uncaught, and console errors the script does not
// expect: `expected(text)` true) are collected in `problems`, for a last check.
export async function watchedPage(browser, problems, expected = () => false) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !expected(message.text())) problems.push(`console error: ${message.text()}`);
  });
  return page;
}

// Drives Debian's headless Chromium over the DevTools protocol (playwright-core, pinned in
// package.json) through `kube-nftpol ui` pages that integration/ui_browser.rs serves, and
// checks what a user sees. Run by that test, not by hand:
//   node integration/ui/browser.mjs CONFIG.json
// CONFIG: {"chromium", "profile", "out", "main": {"url", "workloads": [...], "untick":
// {"flow", "port"}, "kept": [FLOW...]}, "bad": [{"name", "url", "expect": [TEXT...]}],
// "gone": {"url"}}. Prints one JSON line {"download", "screenshot", "checks"} and exits 0, or
// prints what failed and exits 1.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const TIMEOUT = 20_000;
const checks = [];

// Records a check that passed; a failed one ends the run with `detail` (what was seen).
function check(ok, what, detail = "") {
  if (!ok) throw new Error(`check failed: ${what}${detail ? `: ${detail}` : ""}`);
  checks.push(what);
}

// The flags the Debian package needs headless in a container: no sandbox (root), no GPU, and
// none of the background traffic a first run starts.
const context = await chromium.launchPersistentContext(config.profile, {
  executablePath: config.chromium,
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 940 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
// Nothing may be fetched from anywhere but the page's own server.
const elsewhere = [];
await context.route("**/*", (route) => {
  const url = new URL(route.request().url());
  if (url.hostname === "127.0.0.1" || url.protocol === "blob:" || url.protocol === "data:") {
    return route.continue();
  }
  elsewhere.push(url.href);
  return route.abort();
});

async function open(url) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.state !== "loading",
    null, { timeout: TIMEOUT });
  return { page, errors };
}

const idle = (page) => page.waitForFunction(() => document.body.dataset.pending === "0",
  null, { timeout: TIMEOUT });
const yaml = (page) => page.locator("#yaml").textContent();
const change = (page, flow) => page.locator(`tr[data-flow="${flow}"]`).getAttribute("data-change");

let result;
try {
  // The cluster: every observed workload drawn, in the viewport.
  const main = config.main;
  const { page, errors } = await open(main.url);
  check(await page.evaluate(() => document.body.dataset.state) === "ready", "the page is ready");
  await idle(page);
  const drawn = await page.evaluate(() => window.kubeNftpol.cy.nodes(":childless").map((node) => {
    const box = node.renderedBoundingBox();
    const { width, height } = node.cy().container().getBoundingClientRect();
    return { label: node.data("label"), visible: node.visible() && box.x1 >= 0 && box.y1 >= 0
      && box.x2 <= width && box.y2 <= height && box.w > 10 };
  }));
  for (const workload of main.workloads) {
    const node = drawn.find((n) => n.label.split("\n")[0] === workload);
    check(node !== undefined, `the graph has a node for ${workload}`);
    check(node.visible, `${workload} is drawn inside the graph's box`);
  }
  check(drawn.length === main.workloads.length, "the graph has exactly the observed workloads",
    drawn.map((n) => n.label).join(", "));
  const rows = await page.locator("#flows tbody tr").count();
  check(rows === main.flows, `the table has a row per flow (${main.flows})`, `${rows} rows`);

  // Every flow ticked but the external ones: the flow to untick has its rule.
  const before = await yaml(page);
  check(before.includes(`port: ${main.untick.port}`), `the YAML allows port ${main.untick.port}`);
  check(await change(page, main.untick.flow) === "kept", "the flow is allowed with the policies");
  const screenshot = path.join(config.out, "ui.png");

  // Untick it: its rule goes, and the preview marks it blocked (table and graph).
  await page.locator(`tr[data-flow="${main.untick.flow}"] input[type=checkbox]`).uncheck();
  await page.waitForFunction((flow) => document.body.dataset.pending === "0"
    && document.querySelector(`tr[data-flow="${flow}"]`).dataset.change === "newly_denied",
  main.untick.flow, { timeout: TIMEOUT });
  const after = await yaml(page);
  check(!after.includes(`port: ${main.untick.port}`), `unticked: no rule for port ${main.untick.port}`);
  check(after.includes(main.untick.flow), "unticked: the YAML header lists the flow left out");
  const cell = await page.locator(`tr[data-flow="${main.untick.flow}"] td.change`).textContent();
  check(cell.startsWith("blocked"), "the preview says blocked", cell);
  check(await page.evaluate((flow) => window.kubeNftpol.cy.getElementById(`flow-${flow}`)
    .hasClass("newly_denied"), main.untick.flow), "the graph draws the flow as blocked");
  for (const flow of main.kept) {
    check(await change(page, flow) !== "newly_denied", `flow ${flow} is not blocked`);
  }
  await page.screenshot({ path: screenshot });

  // Download the YAML as a user would.
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: TIMEOUT }),
    page.locator("#download").click()]);
  const saved = path.join(config.out, "policies.yaml");
  await download.saveAs(saved);
  check(fs.readFileSync(saved, "utf8") === after, "the download is the YAML shown");
  check(download.suggestedFilename() === "kube-nftpol-policies.yaml", "the download's name");
  check(errors.length === 0, "no script errors", errors.join("; "));
  await page.close();

  // Bad input: a message, never a blank page.
  for (const bad of config.bad) {
    const { page: badPage, errors: badErrors } = await open(bad.url);
    const problems = await badPage.locator("#problems").textContent();
    check(await badPage.locator("#problems").isVisible(), `${bad.name}: the problems are shown`);
    for (const text of bad.expect) {
      check(problems.includes(text), `${bad.name}: the page says "${text}"`, problems);
    }
    const text = await badPage.evaluate(() => document.body.innerText);
    check(text.length > 200, `${bad.name}: the page is not blank`);
    check(badErrors.length === 0, `${bad.name}: no script errors`, badErrors.join("; "));
    await badPage.close();
  }

  // The server goes away while the page is open: the next selection says so.
  const { page: gonePage } = await open(config.gone.url);
  await idle(gonePage);
  fs.writeFileSync(path.join(config.out, "stop"), "");
  await gonePage.waitForFunction(() => fetch("api/graph").then(() => false, () => true),
    null, { timeout: TIMEOUT, polling: 200 });
  await gonePage.locator("#untick-all").click();
  await gonePage.waitForFunction(() => document.getElementById("problems").textContent
    .includes("does not answer"), null, { timeout: TIMEOUT });
  check(true, "a server that went away: the page says it does not answer");
  await gonePage.close();

  check(elsewhere.length === 0, "nothing fetched from elsewhere", elsewhere.join(", "));
  result = { download: saved, screenshot, checks };
} catch (error) {
  console.error(error.message);
  console.error(`passed before that: ${checks.join("; ")}`);
  await context.close();
  process.exit(1);
}
await context.close();
console.log(JSON.stringify(result));

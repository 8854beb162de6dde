// Prints one closing line, "vitest: N passed, N failed, N skipped", that CI reads to know how many
// tests ran (vitest's own summary is styled for people and varies between versions).
//
// "failed" counts failed tests plus, like vitest's "Failed Suites", every file or describe block
// with errors of its own (it failed to load, or a beforeAll/afterAll hook threw: its tests then
// show as skipped), plus errors outside any test, so the line never reads "0 failed" on a red run.
import type { SerializedError } from "vitest";
import type { Reporter, TestModule } from "vitest/node";

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>): void {
    const counts = { passed: 0, failed: 0, skipped: 0 };
    for (const module of testModules) {
      let moduleFailures = 0;
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === "passed") counts.passed++;
        else if (state === "failed") moduleFailures++;
        else counts.skipped++;
      }
      for (const suite of [module, ...module.children.allSuites()]) {
        if (suite.errors().length > 0) moduleFailures++;
      }
      // Whatever else turns a file red still counts once.
      if (module.state() === "failed" && moduleFailures === 0) moduleFailures++;
      counts.failed += moduleFailures;
    }
    counts.failed += unhandledErrors.length;
    process.stdout.write(`\nvitest: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`);
  }
}

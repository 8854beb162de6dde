// Builds the client bundle and the Worker's generated site files (scripts/build-client.mjs) once,
// before any test file runs. Tests in workerd load the Worker without wrangler's [build] step, and
// a fresh clone has neither file: `npm test` builds them in its typecheck, but one project or one
// file run alone would fail (or test a stale build after an edit to client/ or public/).
import { execFileSync } from "node:child_process";

export default function buildClient(): void {
  execFileSync(process.execPath, ["scripts/build-client.mjs"], { stdio: "inherit" });
}

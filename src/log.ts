// One structured log line per event, as JSON, so `wrangler tail` and Logpush can filter on it.
type Level = "info" | "warn" | "error";

export function log(level: Level, message: string, fields: Record<string, unknown> = {}): void {
  const line: Record<string, unknown> = { level, message };
  for (const [key, value] of Object.entries(fields)) {
    line[key] = value instanceof Error ? { name: value.name, message: value.message, stack: value.stack } : value;
  }
  console[level === "info" ? "log" : level](JSON.stringify(line));
}

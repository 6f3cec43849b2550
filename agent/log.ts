// The agent's log: one line per event on stderr, which the container's log keeps.

export function logLine(message: string): void {
  process.stderr.write(`${new Date().toISOString()} memoh-agent: ${message}\n`);
}

// Small helpers for benchmarks: timing loops, percentiles, a markdown table.
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export interface Timing {
  n: number;
  p50: number;
  p99: number;
  mean: number;
}

/** Runs fn `warmup` times untimed, then `n` times timed (ms). */
export async function timeCalls(n: number, fn: () => Promise<unknown>, warmup = Math.min(20, n)): Promise<Timing> {
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  samples.sort((a, b) => a - b);
  return { n, p50: percentile(samples, 50), p99: percentile(samples, 99), mean: samples.reduce((a, b) => a + b, 0) / n };
}

export interface Row {
  benchmark: string;
  ours: string;
  baseline: string;
  ratio: string;
  target: string;
  /** undefined: a row that informs and has no target. */
  ok: boolean | undefined;
}

export function table(rows: Row[]): string {
  const head = ["benchmark", "memoh-workspace", "baseline (same run)", "ratio", "target", "met"];
  const lines = [
    `| ${head.join(" | ")} |`,
    `|${head.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.benchmark} | ${r.ours} | ${r.baseline} | ${r.ratio} | ${r.target} | ${r.ok === undefined ? "—" : r.ok ? "yes" : "NO"} |`),
  ];
  return lines.join("\n");
}

export const ms = (v: number) => `${v.toFixed(2)} ms`;

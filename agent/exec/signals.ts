// Signal names and numbers as the Exec API speaks them: requests name a signal
// ("SIGTERM", "TERM", "term" or "15"); exits report 128 + number and the name.
import os from "node:os";
import { invalidArgument } from "../errors.js";

const numbers: Readonly<Record<string, number>> = os.constants.signals;

/** Number → canonical name; aliases (SIGIOT, SIGPOLL) lose to the name listed first. */
const names = new Map<number, NodeJS.Signals>();
for (const [name, num] of Object.entries(numbers)) {
  if (!names.has(num)) names.set(num, name as NodeJS.Signals);
}

/** The signal a client asked for; anything unknown is INVALID_ARGUMENT. */
export function parseSignal(text: string): NodeJS.Signals {
  if (/^\d{1,2}$/.test(text)) {
    const byNumber = names.get(Number(text));
    if (byNumber) return byNumber;
  } else {
    const upper = text.toUpperCase();
    const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
    if (Object.hasOwn(numbers, name)) return name as NodeJS.Signals;
  }
  throw invalidArgument(`unknown signal ${JSON.stringify(text)}`);
}

export function signalNumber(signal: NodeJS.Signals): number {
  return numbers[signal] ?? 0;
}

export function signalName(num: number): NodeJS.Signals | undefined {
  return names.get(num);
}

export interface ExitStatus {
  /** Exit status, or 128 + signal number when the process was killed by a signal. */
  code: number;
  /** Signal name when killed by a signal, else "". */
  signal: string;
}

/** Folds Node's (code, signal) pair into the API's exit status. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): ExitStatus {
  if (signal) return { code: 128 + signalNumber(signal), signal };
  return { code: code ?? 0, signal: "" };
}

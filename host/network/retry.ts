// Which failures of a network setup another attempt may fix (a zero-MAC bridge, a
// stale allocation) and which it cannot (bad configuration, exhausted addresses).
import { CniConfigError, CniError, CniErrorCode, NetworkSetupError } from "./errors.js";

export const MAC_ERROR = /could not set bridge's mac/i;
const ALREADY_EXISTS = /already exists|duplicate allocation|duplicate ip|has an ip address already|already allocated|already been allocated/i;
const EXHAUSTED = /no IP addresses available|no more addresses|range set .* is full|requested IP address .* is not available/i;

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Errors another attempt cannot fix: retrying only delays the answer. */
export function isPermanent(err: unknown): boolean {
  if (err instanceof NetworkSetupError || err instanceof CniConfigError) return true;
  if (!(err instanceof CniError)) return false;
  if (MAC_ERROR.test(err.message) || ALREADY_EXISTS.test(err.message)) return false;
  if (EXHAUSTED.test(err.message)) return true;
  const permanent: number[] = [
    CniErrorCode.INCOMPATIBLE_VERSION,
    CniErrorCode.UNSUPPORTED_FIELD,
    CniErrorCode.INVALID_NETWORK_CONFIG,
    CniErrorCode.DECODE_FAILURE,
    CniErrorCode.PLUGIN_NOT_FOUND,
    CniErrorCode.INVALID_ENV,
  ];
  return permanent.includes(err.code);
}

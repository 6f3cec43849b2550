// Errors of the CNI runner. A plugin's own error keeps its CNI code so callers can ask
// "which kind of failure?" without matching strings; the runner's codes sit above 1000.

/** Well-known error codes of the CNI spec (1.0.0, "Error"). */
export const CniErrorCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_NETWORK_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  // Not from the spec: failures of the runner around the plugin.
  PLUGIN_NOT_FOUND: 1001,
  TIMEOUT: 1002,
  EXEC_FAILURE: 1003,
  INVALID_RESULT: 1004,
} as const;

export class CniError extends Error {
  /** The plugin's CNI error code (1-99 spec-defined, 100+ plugin-defined) or a runner code (1001+). */
  readonly code: number;
  /** The plugin's `msg`, without the runner's context prefix. */
  readonly msg: string;
  readonly details: string;
  /** The plugin type (binary name) that failed, when one did. */
  readonly plugin: string | undefined;

  constructor(code: number, msg: string, options: { details?: string; plugin?: string; cause?: unknown } = {}) {
    const where = options.plugin === undefined ? "" : `${options.plugin}: `;
    const details = options.details ?? "";
    super(`${where}${msg}${details !== "" ? ` (${details})` : ""} [CNI code ${code}]`, { cause: options.cause });
    this.name = "CniError";
    this.code = code;
    this.msg = msg;
    this.details = details;
    this.plugin = options.plugin;
  }
}

/** The loaded network list is not usable; the message names the file and the field. */
export class CniConfigError extends Error {
  constructor(
    message: string,
    readonly file: string | undefined,
  ) {
    super(file === undefined ? message : `${file}: ${message}`);
    this.name = "CniConfigError";
  }
}

/** setupNetwork failed; `cause` is the last underlying error. */
export class NetworkSetupError extends Error {
  constructor(
    readonly containerId: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(`network setup for ${containerId} failed: ${message}`, options);
    this.name = "NetworkSetupError";
  }
}

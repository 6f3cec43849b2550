// Bearer tokens of the HTTP API.
//
// A token is `mwt_<id>_<secret>`: the id finds the row, the secret (32 random bytes,
// base64url) is checked against the SHA-256 stored for it, compared in constant time.
// The admin token reaches every route; a bot token only `/bots/<its bot>/…`. The admin
// token comes from MEMOH_ADMIN_TOKEN (or the config file); without one, a token is
// generated on first start, printed once, written to `<data_root>/admin-token` (0600)
// for the CLI, and stored only as its hash.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { TokenRow, TokenStore } from "../store/tokens.js";
import { validateBotId } from "../workspace/botid.js";
import { ApiError } from "./errors.js";

export type Principal = { kind: "admin"; tokenId: string } | { kind: "bot"; botId: string; tokenId: string };

export const ADMIN_TOKEN_FILE = "admin-token";
const TOKEN_PATTERN = /^mwt_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
/** The row id of a generated admin token (ids of bot tokens are random). */
const ADMIN_ID = "admin0000000";

export function sha256Hex(value: string): string {
  return createHash("sha256").update(value).digest("hex");
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, "hex");
  const y = Buffer.from(b, "hex");
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

/** A fresh token: its id and the secret to give out once. */
export function newToken(): { id: string; secret: string } {
  const id = randomBytes(6).toString("hex");
  return { id, secret: `mwt_${id}_${randomBytes(32).toString("base64url")}` };
}

export interface CreatedToken {
  token: string;
  row: TokenRow;
}

/**
 * Token rows are cached for a short while: a database query per request would cost more
 * than the rest of a small request (measured: fs/read over HTTP went from +1.3 ms to
 * +0.5 ms over the bridge without it). Revocations through this process take effect at
 * once; a change made behind its back (another process) within CACHE_MS.
 */
const CACHE_MS = 10_000;
/** last_used_at is written at most this often per token. */
const TOUCH_MS = 60_000;

export class ApiAuth {
  /** Hash of MEMOH_ADMIN_TOKEN, when set: it is compared directly, not looked up. */
  private readonly configuredAdminHash: string | undefined;
  private readonly cache = new Map<string, { row: TokenRow; at: number }>();
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly tokens: TokenStore,
    configuredAdminToken: string | undefined,
  ) {
    this.configuredAdminHash = configuredAdminToken === undefined ? undefined : sha256Hex(configuredAdminToken);
  }

  /**
   * Makes sure an admin token exists. With MEMOH_ADMIN_TOKEN nothing is generated, and a
   * token generated before is revoked and its file removed: configuring a token is how an
   * operator replaces one that leaked. Otherwise the first start generates one: returned
   * (to print once) and written to `<dataRoot>/admin-token` (0600) for the CLI.
   */
  async ensureAdminToken(dataRoot: string): Promise<{ generated: string | undefined; file: string | undefined }> {
    const file = path.join(dataRoot, ADMIN_TOKEN_FILE);
    if (this.configuredAdminHash !== undefined) {
      await this.tokens.revoke(ADMIN_ID);
      this.cache.delete(ADMIN_ID);
      fs.rmSync(file, { force: true });
      return { generated: undefined, file: undefined };
    }
    const existing = await this.tokens.get(ADMIN_ID);
    if (existing !== undefined && existing.revokedAt === undefined) return { generated: undefined, file: fs.existsSync(file) ? file : undefined };
    const token = `mwt_${ADMIN_ID}_${randomBytes(32).toString("base64url")}`;
    fs.mkdirSync(dataRoot, { recursive: true });
    // Written before the hash is stored: a crash in between leaves a file nobody can use, never a token nobody knows.
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${token}\n`, { mode: 0o600 });
    fs.renameSync(tmp, file);
    if (existing !== undefined) await this.tokens.delete(ADMIN_ID);
    await this.tokens.insert({ id: ADMIN_ID, kind: "admin", name: "generated admin token", secretSha256: sha256Hex(token) });
    this.cache.delete(ADMIN_ID);
    return { generated: token, file };
  }

  /** The principal of an `Authorization` header value; 401 for anything that is not a valid, live token. */
  async authenticate(header: string | undefined): Promise<Principal> {
    if (header === undefined || header === "") throw new ApiError("unauthenticated", "missing bearer token (Authorization: Bearer <token>)");
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw new ApiError("unauthenticated", "the Authorization header must be \"Bearer <token>\"");
    return this.authenticateToken(m[1]!);
  }

  async authenticateToken(token: string): Promise<Principal> {
    const hash = sha256Hex(token);
    if (this.configuredAdminHash !== undefined && sameHash(hash, this.configuredAdminHash)) return { kind: "admin", tokenId: "configured" };
    const m = TOKEN_PATTERN.exec(token);
    const row = m ? await this.lookup(m[1]!) : undefined;
    // The hash is compared even when no row matched, so timing says nothing about ids.
    const ok = sameHash(hash, row?.secretSha256 ?? "00".repeat(32)) && row !== undefined;
    if (!ok || row === undefined) throw new ApiError("unauthenticated", "invalid token");
    if (row.revokedAt !== undefined) throw new ApiError("unauthenticated", "this token was revoked");
    if (row.expiresAt !== undefined && row.expiresAt.getTime() <= Date.now()) throw new ApiError("unauthenticated", "this token has expired");
    const now = Date.now();
    if ((this.touched.get(row.id) ?? 0) + TOUCH_MS <= now) {
      this.touched.set(row.id, now);
      void this.tokens.touch(row.id).catch(() => undefined);
    }
    return row.kind === "admin" ? { kind: "admin", tokenId: row.id } : { kind: "bot", botId: row.botId!, tokenId: row.id };
  }

  private async lookup(id: string): Promise<TokenRow | undefined> {
    const hit = this.cache.get(id);
    if (hit !== undefined && Date.now() - hit.at < CACHE_MS) return hit.row;
    const row = await this.tokens.get(id);
    // Only tokens that exist are kept (made-up ids never fill it); bounded all the same.
    if (row !== undefined) {
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(id, { row, at: Date.now() });
    }
    return row;
  }

  /** A bot token; the secret is returned once and never stored. */
  async createBotToken(botId: string, opts: { name?: string; expiresInS?: number } = {}): Promise<CreatedToken> {
    validateBotId(botId);
    const { id, secret } = newToken();
    const row = await this.tokens.insert({
      id,
      kind: "bot",
      botId,
      name: opts.name ?? "",
      secretSha256: sha256Hex(secret),
      ...(opts.expiresInS !== undefined ? { expiresAt: new Date(Date.now() + opts.expiresInS * 1000) } : {}),
    });
    return { token: secret, row };
  }

  list(filter: { botId?: string } = {}): Promise<TokenRow[]> {
    return this.tokens.list(filter);
  }

  async revoke(id: string): Promise<void> {
    const row = await this.tokens.get(id);
    if (row === undefined) throw new ApiError("not_found", `no token ${JSON.stringify(id)}`);
    if (row.revokedAt !== undefined) throw new ApiError("conflict", `token ${id} is already revoked`);
    await this.tokens.revoke(id);
    this.cache.delete(id);
  }
}

/** 403 unless the principal may act on `botId` (admins on every bot, a bot token on its own). */
export function requireBot(principal: Principal, botId: string): void {
  if (principal.kind === "admin") return;
  if (principal.botId !== botId) throw new ApiError("permission_denied", "this token is for another bot");
}

export function requireAdmin(principal: Principal): void {
  if (principal.kind !== "admin") throw new ApiError("permission_denied", "this route needs the admin token");
}

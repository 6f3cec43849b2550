// API tokens at rest: id, scope (admin or one bot), the SHA-256 of the secret, expiry
// and revocation. The secret itself is never stored; checking a presented secret is
// the API's job (host/api/auth.ts) and compares hashes in constant time.
import type { Db } from "./db.js";

export type TokenKind = "admin" | "bot";

export interface TokenRow {
  id: string;
  kind: TokenKind;
  botId: string | undefined;
  name: string;
  secretSha256: string;
  createdAt: Date;
  expiresAt: Date | undefined;
  revokedAt: Date | undefined;
  lastUsedAt: Date | undefined;
}

interface TokenDbRow {
  id: string;
  kind: TokenKind;
  bot_id: string | null;
  name: string;
  secret_sha256: string;
  created_at: Date | string;
  expires_at: Date | string | null;
  revoked_at: Date | string | null;
  last_used_at: Date | string | null;
}

const COLUMNS = "id, kind, bot_id, name, secret_sha256, created_at, expires_at, revoked_at, last_used_at";
const date = (v: Date | string | null): Date | undefined => (v === null ? undefined : v instanceof Date ? v : new Date(v));

function mapToken(r: TokenDbRow): TokenRow {
  return {
    id: r.id,
    kind: r.kind,
    botId: r.bot_id ?? undefined,
    name: r.name,
    secretSha256: r.secret_sha256,
    createdAt: date(r.created_at)!,
    expiresAt: date(r.expires_at),
    revokedAt: date(r.revoked_at),
    lastUsedAt: date(r.last_used_at),
  };
}

export class TokenStore {
  constructor(private readonly db: Db) {}

  async insert(t: { id: string; kind: TokenKind; botId?: string; name?: string; secretSha256: string; expiresAt?: Date }): Promise<TokenRow> {
    const { rows } = await this.db.query<TokenDbRow>(
      `INSERT INTO api_tokens (id, kind, bot_id, name, secret_sha256, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${COLUMNS}`,
      [t.id, t.kind, t.botId ?? null, t.name ?? "", t.secretSha256, t.expiresAt ?? null],
    );
    return mapToken(rows[0]!);
  }

  async get(id: string): Promise<TokenRow | undefined> {
    const { rows } = await this.db.query<TokenDbRow>(`SELECT ${COLUMNS} FROM api_tokens WHERE id = $1`, [id]);
    return rows[0] ? mapToken(rows[0]) : undefined;
  }

  async list(filter: { botId?: string; kind?: TokenKind } = {}): Promise<TokenRow[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.botId !== undefined) {
      params.push(filter.botId);
      where.push(`bot_id = $${params.length}`);
    }
    if (filter.kind !== undefined) {
      params.push(filter.kind);
      where.push(`kind = $${params.length}`);
    }
    const { rows } = await this.db.query<TokenDbRow>(
      `SELECT ${COLUMNS} FROM api_tokens${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at, id`,
      params,
    );
    return rows.map(mapToken);
  }

  /** Marks the token revoked; false when there is no such token or it was revoked already. */
  async revoke(id: string): Promise<boolean> {
    const res = await this.db.query(`UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, [id]);
    return res.rowCount > 0;
  }

  async delete(id: string): Promise<void> {
    await this.db.query(`DELETE FROM api_tokens WHERE id = $1`, [id]);
  }

  async touch(id: string): Promise<void> {
    await this.db.query(`UPDATE api_tokens SET last_used_at = now() WHERE id = $1`, [id]);
  }
}

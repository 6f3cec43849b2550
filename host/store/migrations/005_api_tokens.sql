-- Bearer tokens of the HTTP API. Secrets are stored only as their SHA-256 (they are
-- 256-bit random values, so a fast hash is enough); a token reaches everything (admin)
-- or one bot's routes (bot). Revoked and expired tokens stay as a record.
CREATE TABLE api_tokens (
  id text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('admin', 'bot')),
  bot_id text,
  name text NOT NULL DEFAULT '',
  secret_sha256 text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz,
  CONSTRAINT api_tokens_scope CHECK ((kind = 'bot') = (bot_id IS NOT NULL))
);
CREATE INDEX api_tokens_bot_idx ON api_tokens (bot_id);

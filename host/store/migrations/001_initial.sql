-- The workspace tables of DESIGN.md "Database".
--
-- Deleting rows: a workspace that is deleted but whose data is kept is a row
-- with status 'deleted' (its snapshots and versions stay). deleteContainer()
-- is the hard purge, run after the containerd objects are gone: snapshot and
-- version rows describe containerd snapshots of that container, so they go
-- with it (ON DELETE CASCADE) rather than pointing at nothing.
-- lifecycle_events has no foreign key on purpose: it is the audit trail and
-- outlives the container row (the "deleted" event included).
-- container_id changes (a legacy mcp-<bot> row replaced by workspace-<bot>
-- through upsertContainer) carry the bot's snapshots along (ON UPDATE CASCADE).

CREATE TABLE containers (
  bot_id          text PRIMARY KEY,
  container_id    text NOT NULL UNIQUE,
  container_name  text NOT NULL,
  image           text NOT NULL,
  status          text NOT NULL
                  CHECK (status IN ('creating', 'running', 'stopped', 'error', 'deleted')),
  namespace       text NOT NULL,
  auto_start      boolean NOT NULL DEFAULT true,
  container_path  text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  last_started_at timestamptz,
  last_stopped_at timestamptz
);

CREATE INDEX containers_auto_start_idx ON containers (auto_start, status);

CREATE TABLE snapshots (
  id                    bigserial PRIMARY KEY,
  container_id          text NOT NULL
                        REFERENCES containers (container_id) ON DELETE CASCADE ON UPDATE CASCADE,
  runtime_snapshot_name text NOT NULL,
  display_name          text NOT NULL DEFAULT '',
  parent                text,
  snapshotter           text NOT NULL,
  source                text NOT NULL,
  created_at            timestamptz NOT NULL DEFAULT now(),
  UNIQUE (snapshotter, runtime_snapshot_name)
);

CREATE INDEX snapshots_container_idx ON snapshots (container_id, created_at);

CREATE TABLE container_versions (
  id           bigserial PRIMARY KEY,
  container_id text NOT NULL
               REFERENCES containers (container_id) ON DELETE CASCADE ON UPDATE CASCADE,
  snapshot_id  bigint NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  version      integer NOT NULL CHECK (version > 0),
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (container_id, version)
);

CREATE INDEX container_versions_snapshot_idx ON container_versions (snapshot_id);

CREATE TABLE lifecycle_events (
  id           bigserial PRIMARY KEY,
  container_id text NOT NULL,
  event_type   text NOT NULL,
  payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX lifecycle_events_container_idx ON lifecycle_events (container_id, created_at DESC, id DESC);

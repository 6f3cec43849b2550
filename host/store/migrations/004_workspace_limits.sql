-- The cgroup limits a workspace was created with, so a container that reconcile
-- rebuilds gets the same ones back. All three or none: NULL is a row from before
-- limits existed, and the manager applies its configured defaults to it.
-- The upper bound on cpu_limit also refuses NaN, which PostgreSQL sorts above
-- every number (so "> 0" alone would let it through).
ALTER TABLE containers
  ADD COLUMN memory_limit_bytes bigint,
  ADD COLUMN cpu_limit double precision,
  ADD COLUMN pids_limit integer,
  ADD COLUMN oom_kills integer NOT NULL DEFAULT 0,
  ADD COLUMN last_oom_at timestamptz;

-- A CHECK passes on NULL, so "all three or none" is counted with num_nulls.
ALTER TABLE containers ADD CONSTRAINT containers_limits_check CHECK (
  num_nulls(memory_limit_bytes, cpu_limit, pids_limit) IN (0, 3)
  AND memory_limit_bytes > 0
  AND cpu_limit > 0 AND cpu_limit < 'Infinity'::double precision
  AND pids_limit > 0
);
ALTER TABLE containers ADD CONSTRAINT containers_oom_kills_check CHECK (oom_kills >= 0);

-- Pruning keeps the newest N events of each container: it walks
-- lifecycle_events_container_idx (container_id, created_at DESC, id DESC) of
-- 001 per container. It exists already; nothing to add here.

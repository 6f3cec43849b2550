-- 'deleting': delete() marks the row first, then removes task, network, container
-- and snapshot, then the row. A row left 'deleting' (the orchestrator died midway)
-- tells reconcile to finish the deletion, never to rebuild the workspace.
ALTER TABLE containers DROP CONSTRAINT containers_status_check;
ALTER TABLE containers ADD CONSTRAINT containers_status_check
  CHECK (status IN ('creating', 'running', 'stopped', 'error', 'deleting', 'deleted'));

-- The CDI devices a workspace was created with (fully-qualified names such as
-- vendor.com/gpu=0). Kept in the row so that a container rebuilt by reconcile
-- gets the same devices back; the container label alone dies with the container.
ALTER TABLE containers ADD COLUMN cdi_devices text[] NOT NULL DEFAULT '{}';

// ContainerdClient: every resource service over one connection, plus the two
// sequences every caller needs — a container from an image, and its task.
import { ContainerdConnection, type ConnectionOptions } from "./connection.js";
import { ensureNamespace, listNamespaces } from "./namespaces.js";
import { daemonVersion, type DaemonVersion } from "./version.js";
import { collectGarbage, createLease, deleteLease, listLeases, withLease, type CreateLeaseOptions, type LeaseInfo } from "./leases.js";
import { DEFAULT_SNAPSHOTTER, SnapshotService } from "./snapshots.js";
import { ContainerService, type ContainerInfo, type RuncOptions } from "./containers.js";
import { TaskService, type TaskExitStatus } from "./tasks.js";
import { subscribe, subscribeTaskExits, subscribeTaskOoms, type EventEnvelope, type Subscription, type TaskExitEvent, type TaskOomEvent } from "./events.js";
import { readCgroupStats, type CgroupOptions, type CgroupStats } from "./cgroups.js";
import { ContainerdError } from "./errors.js";
import { imageRootfs, type ImageRootfs } from "./image-rootfs.js";
import { buildSpec, defaultUnixSpec, withImageConfig, type Spec, type SpecOpt } from "./spec.js";

export interface ContainerdClientOptions extends ConnectionOptions {
  /** Default overlayfs. */
  snapshotter?: string;
  /** Options for the runc shim of every container this client creates (e.g. a private runc root). */
  runcOptions?: RuncOptions;
}

export interface CreateFromImageOptions {
  id: string;
  /** A stored (pulled or imported) image name. */
  image: string;
  /**
   * Applied after the default spec and the image config; a function gets the resolved
   * image (its config) first.
   */
  specOpts?: SpecOpt[] | ((rootfs: ImageRootfs) => SpecOpt[]);
  /**
   * Apply the image's config (env, command, working dir, user) like containerd's
   * WithImageConfig (default true). A caller that runs its own process in any image
   * passes false and takes what it needs from the config itself.
   */
  applyImageConfig?: boolean;
  labels?: Record<string, string>;
  /** Default: the container id. */
  snapshotKey?: string;
  /** The parent of the new active snapshot: a committed snapshot name; default: the image's top chainID. */
  parentSnapshot?: string;
  /** Labels of the new active snapshot (e.g. `containerd.io/gc.root`, so it outlives a lost container). */
  snapshotLabels?: Record<string, string>;
  /**
   * When an active snapshot `snapshotKey` already exists (the container was lost, its
   * rootfs was not), create the container on it instead of preparing a new one. A
   * reused snapshot is never removed, not even when the create fails.
   */
  reuseActiveSnapshot?: boolean;
}

export class ContainerdClient {
  readonly conn: ContainerdConnection;
  readonly snapshots: SnapshotService;
  readonly containers: ContainerService;
  readonly tasks: TaskService;
  readonly runcOptions: RuncOptions | undefined;

  constructor(opts: ContainerdClientOptions) {
    this.conn = new ContainerdConnection(opts);
    this.snapshots = new SnapshotService(this.conn, opts.snapshotter ?? DEFAULT_SNAPSHOTTER);
    this.containers = new ContainerService(this.conn);
    this.tasks = new TaskService(this.conn);
    this.runcOptions = opts.runcOptions;
  }

  get namespace(): string {
    return this.conn.namespace;
  }

  /** Fails with code "unavailable" when the socket is missing or the daemon does not answer. */
  ready(timeoutMs?: number): Promise<void> {
    return this.conn.ready(timeoutMs);
  }

  version(): Promise<DaemonVersion> {
    return daemonVersion(this.conn);
  }

  ensureNamespace(labels?: Record<string, string>): Promise<void> {
    return ensureNamespace(this.conn, this.conn.namespace, labels);
  }

  listNamespaces(): Promise<string[]> {
    return listNamespaces(this.conn);
  }

  // -------------------------------------------------------------- leases

  createLease(opts?: CreateLeaseOptions): Promise<LeaseInfo> {
    return createLease(this.conn, opts);
  }

  deleteLease(id: string, opts?: { sync?: boolean; ignoreNotFound?: boolean }): Promise<void> {
    return deleteLease(this.conn, id, opts);
  }

  listLeases(filters?: string[]): Promise<LeaseInfo[]> {
    return listLeases(this.conn, filters);
  }

  withLease<T>(fn: (leaseId: string) => Promise<T>, opts?: CreateLeaseOptions): Promise<T> {
    return withLease(this.conn, fn, opts);
  }

  /** Runs containerd's garbage collector and waits for it. */
  collectGarbage(): Promise<void> {
    return collectGarbage(this.conn);
  }

  // -------------------------------------------------------------- events

  subscribe(filters?: string[]): Subscription<EventEnvelope> {
    return subscribe(this.conn, filters);
  }

  subscribeTaskExits(): Subscription<TaskExitEvent> {
    return subscribeTaskExits(this.conn);
  }

  /** OOM kills in this namespace's tasks. */
  subscribeTaskOoms(): Subscription<TaskOomEvent> {
    return subscribeTaskOoms(this.conn);
  }

  // -------------------------------------------------------------- cgroups

  /** The cgroup counters (OOM kills, memory, pids) of container `id`'s task, from its spec's cgroupsPath. */
  async cgroupStats(id: string, opts?: CgroupOptions): Promise<CgroupStats> {
    const container = await this.containers.get(id);
    const cgroupsPath = container.spec?.linux.cgroupsPath;
    if (!cgroupsPath) throw new ContainerdError("failed_precondition", `container ${id} has no cgroupsPath in its spec`);
    return readCgroupStats(cgroupsPath, opts);
  }

  // -------------------------------------------------------------- sequences

  imageRootfs(image: string): Promise<ImageRootfs> {
    return imageRootfs(this.conn, image);
  }

  /** The default spec for container `id` with the image's config applied, then `opts`. */
  specFor(id: string, rootfs: ImageRootfs | undefined, opts: SpecOpt[] = []): Spec {
    return buildSpec(defaultUnixSpec(this.conn.namespace, id), ...(rootfs ? [withImageConfig(rootfs.config)] : []), ...opts);
  }

  /**
   * Prepares the container's active snapshot on the image (or `parentSnapshot`)
   * and creates the container, under a lease so GC cannot take the snapshot in
   * between. On failure a snapshot prepared here is removed again.
   */
  async createContainerFromImage(opts: CreateFromImageOptions): Promise<ContainerInfo & { reusedSnapshot: boolean }> {
    const rootfs = await this.imageRootfs(opts.image);
    const snapshotKey = opts.snapshotKey ?? opts.id;
    const specOpts = typeof opts.specOpts === "function" ? opts.specOpts(rootfs) : opts.specOpts;
    const spec = this.specFor(opts.id, opts.applyImageConfig === false ? undefined : rootfs, specOpts);
    return this.withLease(async (lease) => {
      const reused = opts.reuseActiveSnapshot === true && (await this.snapshots.isActive(snapshotKey));
      if (!reused) {
        await this.snapshots.prepare(snapshotKey, opts.parentSnapshot ?? rootfs.chainId, { lease, ...(opts.snapshotLabels ? { labels: opts.snapshotLabels } : {}) });
      }
      try {
        return await this.containers.create(
          {
            id: opts.id,
            spec,
            image: opts.image,
            snapshotter: this.snapshots.snapshotter,
            snapshotKey,
            labels: opts.labels ?? {},
            ...(this.runcOptions ? { runcOptions: this.runcOptions } : {}),
          },
          { lease },
        ).then((info) => ({ ...info, reusedSnapshot: reused }));
      } catch (err) {
        if (!reused) await this.snapshots.remove(snapshotKey, { ignoreNotFound: true }).catch(() => {});
        throw err;
      }
    });
  }


  /** Creates the container's task on its snapshot (output to `logPath`); returns the pid, not yet started. */
  async createTask(id: string, opts: { logPath?: string } = {}): Promise<number> {
    const container = await this.containers.get(id);
    const rootfs = container.snapshotKey ? await this.snapshots.mounts(container.snapshotKey, { snapshotter: container.snapshotter }) : [];
    return this.tasks.create(id, { rootfs, ...(opts.logPath ? { logPath: opts.logPath } : {}), ...(this.runcOptions ? { runcOptions: this.runcOptions } : {}) });
  }

  /** createTask + start; returns the pid. */
  async startContainer(id: string, opts: { logPath?: string } = {}): Promise<number> {
    await this.createTask(id, opts);
    try {
      return await this.tasks.start(id);
    } catch (err) {
      await this.tasks.delete(id).catch(() => {});
      throw err;
    }
  }

  /** Stops its task (SIGTERM, grace, SIGKILL), deletes the container and, unless kept, its snapshot. */
  async removeContainer(id: string, opts: { graceMs?: number; killTimeoutMs?: number; keepSnapshot?: boolean } = {}): Promise<TaskExitStatus | undefined> {
    const exit = await this.tasks.stop(id, { graceMs: opts.graceMs ?? 10_000, ...(opts.killTimeoutMs !== undefined ? { killTimeoutMs: opts.killTimeoutMs } : {}) });
    await this.containers.delete(id, { removeSnapshot: !opts.keepSnapshot, ignoreNotFound: true });
    return exit;
  }

  close(): void {
    this.conn.close();
  }
}

// A directory's names in byte order, read in batches of bounded size. Sorting needs
// every name before the first one can be used, and a directory may hold millions of
// them; so one read of the directory (streamed, a few hundred entries per system
// call) keeps only the smallest names after a cursor that fit an allowance of
// bytes, and the caller reads the directory again, after the last name it used,
// for the next batch. A directory whose names fit is read once; a larger one costs
// one more read per batch, and memory stays bounded whatever its size.
//
// Names are latin1 strings: one char per byte, so the default string order is byte
// order, and a string costs far less memory than a Buffer per name.
import fsSync from "node:fs";
import { setImmediate as yieldLoop } from "node:timers/promises";
import { direntName } from "./fileinfo.js";

/** Estimated memory one held name costs beyond its bytes: the string's header and its array slot. */
export const NAME_OVERHEAD_BYTES = 32;
/** Entries one readdir system call returns. */
const DIR_BUFFER_ENTRIES = 512;
/**
 * Entries read between two turns of the event loop. The reads are synchronous
 * system calls, like the rest of a tree walk's per-entry work (read-tree.ts):
 * a few milliseconds' worth, then other calls get their turn.
 */
const YIELD_EVERY_NAMES = 4096;

/** Estimated memory of one held name. */
export function nameCost(name: string): number {
  return name.length + NAME_OVERHEAD_BYTES;
}

export interface NameBatch {
  /** The smallest names after the cursor, sorted. */
  names: string[];
  /** Their estimated memory (nameCost). */
  bytes: number;
  /** The most estimated bytes of names the read held at once. */
  peakBytes: number;
  /** Names after the cursor in the directory: those in `names` and the ones left out. */
  count: number;
  /** `names` holds every name after the cursor. */
  complete: boolean;
}

export interface BatchOptions {
  /** Only names after this one (byte order); undefined: from the first. */
  after?: string;
  /** Estimated bytes (nameCost) the batch may hold; it holds at least one name. The read holds at most twice this. */
  roomBytes: number;
  /** More names than this after the cursor: the read stops there and answers undefined. */
  maxCount: number;
  /** Called for every entry read from the directory (tests count them). */
  onEntry?: () => void;
  /** Checked at each turn of the event loop: true ends the read early (its batch is then not complete). */
  stopped?: () => boolean;
}

/**
 * The next batch of `dirPath`'s names after `opts.after`, in byte order; undefined
 * when more than `opts.maxCount` names follow the cursor (found without reading the
 * rest). Throws what opendir or readdir throw (a directory that cannot be listed).
 */
export async function readSortedBatch(dirPath: Buffer, opts: BatchOptions): Promise<NameBatch | undefined> {
  const { after, roomBytes } = opts;
  // Node accepts encoding "buffer" (names as Buffers); its typings only list text encodings.
  const dir = fsSync.opendirSync(dirPath, { encoding: "buffer" as BufferEncoding, bufferSize: DIR_BUFFER_ENTRIES });
  let kept: string[] = [];
  let bytes = 0;
  let peakBytes = 0;
  let count = 0;
  /** The smallest name left out so far: no name from it on can belong to the batch. */
  let ceiling: string | undefined;
  let interrupted = false;
  /** Sorts what is kept and keeps the smallest names that fit the room (at least one). */
  const cut = (): void => {
    kept.sort();
    let n = 0;
    let b = 0;
    while (n < kept.length) {
      const c = nameCost(kept[n]!);
      if (n > 0 && b + c > roomBytes) break;
      b += c;
      n++;
    }
    if (n < kept.length) {
      // Everything kept lies below the old ceiling, so this one is lower still.
      ceiling = kept[n];
      kept = kept.slice(0, n);
    }
    bytes = b;
  };
  try {
    let sinceYield = 0;
    for (;;) {
      const entry = dir.readSync();
      if (entry === null) break;
      opts.onEntry?.();
      const name = direntName(entry).toString("latin1");
      if (after === undefined || name > after) {
        if (++count > opts.maxCount) return undefined;
        const c = nameCost(name);
        // Room is made before the name is taken, so the read never holds more than twice the batch.
        if (bytes + c > 2 * roomBytes) cut();
        if (ceiling === undefined || name < ceiling) {
          kept.push(name);
          bytes += c;
          if (bytes > peakBytes) peakBytes = bytes;
        }
      }
      if (++sinceYield >= YIELD_EVERY_NAMES) {
        sinceYield = 0;
        await yieldLoop();
        if (opts.stopped?.()) {
          interrupted = true;
          break;
        }
      }
    }
  } finally {
    dir.closeSync();
  }
  cut();
  return { names: kept, bytes, peakBytes, count, complete: ceiling === undefined && !interrupted };
}

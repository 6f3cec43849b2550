// ReadFd (agent/fs/fd.ts): the descriptor the read paths use. A close while a read is
// still queued or running in the thread pool must wait for it, or the read could run on
// a descriptor number already given to another file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs, { constants } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ReadFd, SYNC_READ_MAX_BYTES } from "../../agent/fs/fd.js";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "memoh-read-fd-"));
const isOpen = (fd: number) => {
  try {
    fs.fstatSync(fd);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EBADF") return false;
    throw err;
  }
};

test("open, stat, readNow and read give the file's bytes; close closes the descriptor once", async () => {
  const dir = tmp();
  try {
    const file = path.join(dir, "f");
    const bytes = Buffer.from("0123456789abcdef".repeat(8192)); // 128 KiB
    fs.writeFileSync(file, bytes);
    const fd = ReadFd.open(file, constants.O_RDONLY);
    assert.equal(fd.stat().size, bytes.length);
    const small = Buffer.alloc(10);
    assert.equal(fd.readNow(small, 0, 10, 16), 10);
    assert.equal(small.toString(), "0123456789");
    const big = Buffer.alloc(bytes.length);
    assert.equal((await fd.read(big, 0, big.length, 0)).bytesRead, bytes.length);
    assert.ok(big.equals(bytes));
    const parts = [Buffer.alloc(4), Buffer.alloc(4)];
    assert.equal((await fd.readv(parts, 8)).bytesRead, 8);
    assert.equal(Buffer.concat(parts).toString(), "89abcdef");
    // A synchronous read is for small reads only.
    assert.throws(() => fd.readNow(Buffer.alloc(SYNC_READ_MAX_BYTES + 1), 0, SYNC_READ_MAX_BYTES + 1, 0), RangeError);
    fd.close();
    assert.equal(isOpen(fd.fd), false);
    fd.close(); // harmless
    assert.throws(() => fd.stat(), { code: "EBADF" });
    await assert.rejects(fd.read(Buffer.alloc(1), 0, 1, 0), { code: "EBADF" });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a close while a read waits in the thread pool closes the descriptor only after that read ends", async () => {
  const dir = tmp();
  try {
    const fifo = path.join(dir, "pipe");
    execFileSync("mkfifo", [fifo]);
    // O_RDWR: the open does not wait for a writer, and a read waits for bytes.
    const fd = ReadFd.open(fifo, constants.O_RDWR);
    const buf = Buffer.alloc(5);
    const reading = fd.read(buf, 0, 5, -1);
    fd.close();
    assert.equal(isOpen(fd.fd), true, "closed while a read was in flight");
    assert.throws(() => fd.readNow(Buffer.alloc(1), 0, 1, -1), { code: "EBADF" }, "no new reads once closing");
    const writer = fs.openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    try {
      fs.writeSync(writer, "hello");
    } finally {
      fs.closeSync(writer);
    }
    assert.equal((await reading).bytesRead, 5);
    assert.equal(buf.toString(), "hello");
    assert.equal(isOpen(fd.fd), false, "still open after the last read ended");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("open errors are the system's (ENOENT), and a path with a NUL byte is refused", () => {
  const dir = tmp();
  try {
    assert.throws(() => ReadFd.open(path.join(dir, "missing"), constants.O_RDONLY), { code: "ENOENT" });
    assert.throws(() => ReadFd.open(`${dir}/a\0b`, constants.O_RDONLY), { code: "ERR_INVALID_ARG_VALUE" });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

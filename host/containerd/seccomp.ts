// The default syscall filter of a workspace, in the spirit of Docker's default
// seccomp profile: everything ordinary work needs (shells, compilers, node and
// its worker threads, python, package managers, debuggers) is allowed; what
// reaches past the container is refused with EPERM — namespaces and mounts,
// the kernel keyring, BPF, perf, kernel modules, kexec, swap, reboot,
// open_by_handle_at (the "shocker" escape), userfaultfd, clock setting, and
// anything this list does not know yet.
//
// Capabilities do not replace this filter: several of these calls need no
// capability at all (unshare of a user namespace, keyctl, userfaultfd), and the
// rest are kernel surface a workspace never needs.
import os from "node:os";
import type { LinuxSeccomp, LinuxSyscall, SeccompArch } from "./spec.js";

const EPERM = 1;
const ENOSYS = 38;

// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
export const CLONE_NAMESPACE_FLAGS = 0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/** personality(2) personas allowed: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the 0xffffffff query. */
export const ALLOWED_PERSONALITIES = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/** Allowed with any arguments, on every architecture (names a kernel lacks are skipped by runc). */
const ALLOWED_SYSCALLS = [
  // files and directories
  "access", "chdir", "chmod", "chown", "chown32", "chroot", "close", "close_range", "copy_file_range", "creat",
  "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fchdir", "fchmod",
  "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
  "flock", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
  "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "getxattr", "lchown", "lchown32", "lgetxattr", "link",
  "linkat", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "mkdir",
  "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "openat2", "pread64", "preadv", "preadv2",
  "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "removexattr", "rename",
  "renameat", "renameat2", "rmdir", "sendfile", "sendfile64", "setxattr", "splice", "stat", "stat64", "statfs",
  "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate", "truncate64",
  "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vmsplice", "write", "writev",
  "cachestat",
  // file events and descriptors
  "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
  "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark", "inotify_add_watch", "inotify_init", "inotify_init1",
  "inotify_rm_watch", "ioctl", "_newselect", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64", "pselect6",
  "pselect6_time64", "select", "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
  "timerfd_settime", "timerfd_settime64", "memfd_create", "memfd_secret",
  // asynchronous I/O (io_uring is left out, as Docker does: libuv and others fall back)
  "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit",
  "ioprio_get", "ioprio_set",
  // processes and threads
  "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid", "waitpid",
  "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getsid", "gettid", "setpgid", "setpriority", "setsid",
  "get_robust_list", "set_robust_list", "get_thread_area", "set_thread_area", "set_tid_address", "rseq", "membarrier",
  "futex", "futex_time64", "futex_waitv", "futex_wait", "futex_wake", "futex_requeue", "prctl", "seccomp",
  "pidfd_open", "pidfd_send_signal", "process_mrelease", "restart_syscall", "getrusage", "times", "sysinfo", "uname",
  "getcpu", "getrandom", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
  // debuggers and profilers: ptrace is safe since Linux 4.8 (seccomp is re-checked after a tracer changes a syscall)
  "ptrace", "process_vm_readv", "process_vm_writev",
  // scheduling
  "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
  "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
  "sched_setparam", "sched_setscheduler", "sched_yield",
  // identity
  "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getresgid",
  "getresgid32", "getresuid", "getresuid32", "getuid", "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
  "setgid", "setgid32", "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
  "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
  // limits
  "getrlimit", "prlimit64", "setrlimit", "ugetrlimit",
  // memory
  "brk", "madvise", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "msync",
  "munlock", "munlockall", "munmap", "remap_file_pages", "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack",
  "mseal",
  // signals
  "kill", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
  "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask",
  "sigreturn", "tgkill", "tkill",
  // time (reading it, sleeping, timers; setting the clock is refused)
  "adjtimex", "alarm", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
  "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep",
  "setitimer", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
  "timer_settime", "timer_settime64",
  // sockets (which families and types work is up to the kernel and the capabilities)
  "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen", "recv", "recvfrom",
  "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown",
  "socket", "socketcall", "socketpair",
  // System V and POSIX IPC (private to the container's IPC namespace)
  "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
  "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop",
  "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
];

const PTRACE_SYSCALLS = new Set(["ptrace", "process_vm_readv", "process_vm_writev"]);

const ARCH_SYSCALLS: Record<string, { architectures: SeccompArch[]; syscalls: string[] }> = {
  x64: { architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], syscalls: ["arch_prctl", "modify_ldt"] },
  ia32: { architectures: ["SCMP_ARCH_X86"], syscalls: ["modify_ldt"] },
  arm64: {
    architectures: ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    syscalls: ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
  },
  arm: {
    architectures: ["SCMP_ARCH_ARM"],
    syscalls: ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
  },
};

export interface DefaultSeccompOptions {
  /** Node's name of the CPU architecture (default: this machine's). */
  arch?: string;
  /** The kernel release, e.g. "6.1.0-18-amd64" (default: this machine's); ptrace needs 4.8 or later. */
  kernelRelease?: string;
}

function kernelAtLeast(release: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}

/**
 * The workspace default filter: unknown syscalls fail with EPERM; clone only
 * without namespace flags; clone3 (whose flags a filter cannot see) fails with
 * ENOSYS so glibc falls back to clone; personality only for the usual personas.
 */
export function defaultSeccompProfile(opts: DefaultSeccompOptions = {}): LinuxSeccomp {
  const arch = opts.arch ?? process.arch;
  const archRules = ARCH_SYSCALLS[arch];
  if (!archRules) throw new Error(`defaultSeccompProfile: no profile for architecture ${arch} (supported: ${Object.keys(ARCH_SYSCALLS).join(", ")})`);
  // Before 4.8 a tracer could rewrite a syscall after seccomp had allowed it.
  const ptraceIsSafe = kernelAtLeast(opts.kernelRelease ?? os.release(), 4, 8);
  const allowed = ALLOWED_SYSCALLS.filter((name) => ptraceIsSafe || !PTRACE_SYSCALLS.has(name));
  const syscalls: LinuxSyscall[] = [
    { names: [...allowed, ...archRules.syscalls], action: "SCMP_ACT_ALLOW" },
    ...ALLOWED_PERSONALITIES.map((persona): LinuxSyscall => ({
      names: ["personality"],
      action: "SCMP_ACT_ALLOW",
      args: [{ index: 0, value: persona, op: "SCMP_CMP_EQ" }],
    })),
    // The flags are clone's first argument on x86 and arm (the second only on s390).
    { names: ["clone"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }] },
    { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: ENOSYS },
  ];
  return {
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: EPERM,
    architectures: [...archRules.architectures],
    syscalls,
  };
}

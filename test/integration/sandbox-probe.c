// The sandbox probe of containerd-sandbox.test.ts, compiled there with `gcc -static`.
//   probe syscalls          tries syscalls a workspace sandbox should refuse or allow and
//                           prints "<name> <errno>" per line (0: it worked)
//   probe hold <MiB> cmd..  holds <MiB> of memory, runs cmd as a child, then stays (as a
//                           container's init: reaps children, never exits)
//   probe hog <adj>         once its oom_score_adj is <adj>, allocates memory until the
//                           OOM killer ends it
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOWHERE "/nonexistent-memoh-probe"

static void report(const char *name, long rc) {
  printf("%s %d\n", name, rc < 0 ? errno : 0);
  fflush(stdout);
}

/* Runs fn in a child, so what it changes (namespaces, personality, keys) dies with the child. */
static void in_child(const char *name, int (*fn)(void)) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    printf("%s fork-failed-%d\n", name, errno);
    return;
  }
  if (pid == 0) _exit(fn() < 0 ? errno : 0);
  int status = 0;
  waitpid(pid, &status, 0);
  printf("%s %d\n", name, WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status));
  fflush(stdout);
}

static long clone_with(unsigned long flags) {
  long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid(pid, NULL, 0);
  return pid < 0 ? -1 : 0;
}

struct clone3_args { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; };

static long clone3_plain(void) {
  struct clone3_args args;
  memset(&args, 0, sizeof args);
  args.exit_signal = SIGCHLD;
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid(pid, NULL, 0);
  return pid < 0 ? -1 : 0;
}

static int unshare_user(void) { return unshare(CLONE_NEWUSER); }
static int unshare_mount(void) { return unshare(CLONE_NEWNS); }
static int clone_newuser(void) { return clone_with(CLONE_NEWUSER); }
static int clone_newns(void) { return clone_with(CLONE_NEWNS); }
static int setns_uts(void) {
  int fd = open("/proc/self/ns/uts", O_RDONLY);
  return fd < 0 ? -1 : setns(fd, CLONE_NEWUTS);
}
static int add_key_user(void) { return syscall(SYS_add_key, "user", "memoh-probe", "x", 1, -2 /* process keyring */) < 0 ? -1 : 0; }
static int persona_no_aslr(void) { return personality(ADDR_NO_RANDOMIZE) < 0 ? -1 : 0; }
static int ptrace_traceme(void) { return ptrace(PTRACE_TRACEME, 0, 0, 0) < 0 ? -1 : 0; }

static void *thread_main(void *arg) { return arg; }

static long icmp_echo(void) {
  int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
  if (s < 0) return -1;
  struct timeval tv = {2, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in to;
  memset(&to, 0, sizeof to);
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct icmphdr echo;
  memset(&echo, 0, sizeof echo);
  echo.type = ICMP_ECHO;
  echo.un.echo.sequence = htons(1);
  char reply[256];
  long n = -1;
  if (sendto(s, &echo, sizeof echo, 0, (struct sockaddr *)&to, sizeof to) >= 0) n = recv(s, reply, sizeof reply, 0);
  int err = errno;
  close(s);
  if (n < (long)sizeof echo || ((struct icmphdr *)reply)->type != ICMP_ECHOREPLY) {
    errno = n < 0 ? err : EPROTO;
    return -1;
  }
  return 0;
}

static long fd_result(long fd) {
  if (fd >= 0) close((int)fd);
  return fd < 0 ? -1 : 0;
}

static int syscalls(void) {
  in_child("unshare_user", unshare_user);
  in_child("unshare_mount", unshare_mount);
  in_child("clone_newuser", clone_newuser);
  in_child("clone_newns", clone_newns);
  report("clone_plain", clone_with(0));
  report("clone3", clone3_plain());
  pthread_t t;
  int rc = pthread_create(&t, NULL, thread_main, NULL);
  if (rc == 0) pthread_join(t, NULL);
  printf("pthread_create %d\n", rc);
  in_child("setns", setns_uts);
  report("mount", mount("none", NOWHERE, "tmpfs", 0, NULL));
  report("umount2", umount2(NOWHERE, 0));
  report("pivot_root", syscall(SYS_pivot_root, NOWHERE, NOWHERE));
  report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session keyring */, 0));
  in_child("add_key", add_key_user);
  report("request_key", syscall(SYS_request_key, "user", "memoh-probe-absent", NULL, 0));
  char zeroes[256];
  memset(zeroes, 0, sizeof zeroes);
  report("bpf", fd_result(syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, zeroes, 64)));
  struct perf_event_attr pe;
  memset(&pe, 0, sizeof pe);
  pe.type = PERF_TYPE_SOFTWARE;
  pe.size = sizeof pe;
  pe.config = PERF_COUNT_SW_CPU_CLOCK;
  pe.disabled = 1;
  report("perf_event_open", fd_result(syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0)));
  report("init_module", syscall(SYS_init_module, NULL, 0, ""));
  report("finit_module", syscall(SYS_finit_module, -1, "", 0));
  report("delete_module", syscall(SYS_delete_module, "memoh_probe_absent", O_NONBLOCK));
  report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
  report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0));
  report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY));
  report("swapon", swapon(NOWHERE, 0));
  report("swapoff", swapoff(NOWHERE));
  report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
  report("userfaultfd", fd_result(syscall(SYS_userfaultfd, 0)));
  report("io_uring_setup", fd_result(syscall(SYS_io_uring_setup, 1, zeroes)));
  report("personality_query", personality(0xffffffff) < 0 ? -1 : 0);
  in_child("personality_no_aslr", persona_no_aslr);
  in_child("ptrace_traceme", ptrace_traceme);
  report("icmp_echo_dgram", icmp_echo());
  report("raw_socket", fd_result(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)));
  return 0;
}

static int oom_score_adj(void) {
  int v = -1;
  FILE *f = fopen("/proc/self/oom_score_adj", "r");
  if (f) {
    if (fscanf(f, "%d", &v) != 1) v = -1;
    fclose(f);
  }
  return v;
}

/* Allocates and writes every page (through volatile, so the compiler cannot drop the writes). */
static void touch_mib(size_t mib) {
  volatile char *p = malloc(mib << 20);
  if (!p) {
    printf("malloc of %zu MiB failed\n", mib);
    exit(1);
  }
  for (size_t i = 0; i < (mib << 20); i += 4096) p[i] = 1;
}

_Noreturn static void hold(size_t mib, char **cmd) {
  touch_mib(mib);
  printf("holding %zu MiB\n", mib);
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    execv(cmd[0], cmd);
    _exit(127);
  }
  for (;;) {
    if (wait(NULL) < 0 && errno == ECHILD) pause();
  }
}

_Noreturn static void hog(int adj) {
  // Whoever started us sets our oom_score_adj; only then is the OOM killer's choice settled.
  while (oom_score_adj() != adj) usleep(10000);
  printf("hog: allocating\n");
  fflush(stdout);
  for (size_t mib = 1;; mib++) {
    touch_mib(1);
    if (mib % 8 == 0) {
      printf("hog: %zu MiB\n", mib);
      fflush(stdout);
    }
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "syscalls") == 0) return syscalls();
  if (argc == 3 && strcmp(argv[1], "hog") == 0) hog(atoi(argv[2]));
  if (argc >= 4 && strcmp(argv[1], "hold") == 0) hold((size_t)atoi(argv[2]), argv + 3);
  fprintf(stderr, "usage: %s syscalls | hold <MiB> <cmd...> | hog <oom_score_adj>\n", argv[0]);
  return 2;
}

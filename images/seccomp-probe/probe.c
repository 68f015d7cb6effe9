/* seccomp probe: makes the syscalls named on its command line and prints one line per
 * call, "NAME=ok" or "NAME=err:ERRNO". Built static for x86_64 and i386 (build.sh), so
 * the same checks run under both architectures' syscall numbers.
 *
 *   sys:NR[:A0[:A1[:A2[:A3]]]]  raw syscall NR with up to four numeric arguments
 *   getppid mount ptrace reboot kexec_load clock_gettime mmap_wx
 *
 * Every named call is harmless even when it is allowed and made as root (it was once run
 * unfiltered on a host): mount targets a path that does not exist (ENOENT when allowed),
 * ptrace peeks at a process that is not traced (ESRCH), reboot and kexec_load get
 * invalid arguments (EINVAL). A filter shows as a different errno (EPERM by default).
 *   socket_inet_dgram socket_inet6_dgram socket_unix socket_netlink
 *   thread_getppid   getppid from a second thread
 *   x32_getppid      getppid through the x32 ABI (x86_64 builds only)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long ret) {
    if (ret < 0)
        printf("%s=err:%d\n", name, errno);
    else
        printf("%s=ok\n", name);
    fflush(stdout);
}

static long sock(int family, int type) {
    int fd = socket(family, type, 0);
    if (fd >= 0)
        close(fd);
    return fd;
}

static void *thread_main(void *arg) {
    (void)arg;
    report("thread_getppid", syscall(SYS_getppid));
    return NULL;
}

static long raw(const char *spec) {
    long v[5] = {0, 0, 0, 0, 0};
    int n = 0;
    const char *p = spec + 4;
    while (n < 5 && *p) {
        char *end;
        v[n++] = strtol(p, &end, 0);
        p = (*end == ':') ? end + 1 : end;
    }
    return syscall(v[0], v[1], v[2], v[3], v[4]);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long r;
        errno = 0;
        if (strncmp(a, "sys:", 4) == 0) {
            r = raw(a);
        } else if (!strcmp(a, "getppid")) {
            r = syscall(SYS_getppid);
        } else if (!strcmp(a, "mount")) {
            r = mount("none", "/nonexistent-l4m-probe", "tmpfs", 0, NULL);
        } else if (!strcmp(a, "ptrace")) {
            r = ptrace(PTRACE_PEEKDATA, getpid(), NULL, NULL);
        } else if (!strcmp(a, "reboot")) {
            /* An invalid magic: never reboots, only reaches the syscall. */
            r = syscall(SYS_reboot, 0, 0, 0, NULL);
        } else if (!strcmp(a, "kexec_load")) {
            r = syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL);
        } else if (!strcmp(a, "clock_gettime")) {
            struct timespec ts;
            r = clock_gettime(CLOCK_MONOTONIC, &ts);
        } else if (!strcmp(a, "mmap_wx")) {
            void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            r = (m == MAP_FAILED) ? -1 : 0;
        } else if (!strcmp(a, "socket_inet_dgram")) {
            r = sock(AF_INET, SOCK_DGRAM);
        } else if (!strcmp(a, "socket_inet6_dgram")) {
            r = sock(AF_INET6, SOCK_DGRAM);
        } else if (!strcmp(a, "socket_unix")) {
            r = sock(AF_UNIX, SOCK_STREAM);
        } else if (!strcmp(a, "socket_netlink")) {
            r = sock(AF_NETLINK, SOCK_RAW);
        } else if (!strcmp(a, "thread_getppid")) {
            pthread_t t;
            if (pthread_create(&t, NULL, thread_main, NULL) == 0)
                pthread_join(t, NULL);
            continue;
        } else if (!strcmp(a, "x32_getppid")) {
#if defined(__x86_64__)
            r = syscall(0x40000000 | 110);
#else
            errno = ENOSYS;
            r = -1;
#endif
        } else {
            fprintf(stderr, "probe: unknown call %s\n", a);
            return 2;
        }
        report(a, r);
    }
    return 0;
}

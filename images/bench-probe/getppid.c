/* bench probe: N raw getppid(2) calls in a tight loop, then prints the mean cost of one
 * call in nanoseconds ("NS_PER_CALL\n"). hack/bench runs it inside a container with and
 * without a seccomp filter: the difference is what the filter costs per syscall.
 *
 *   getppid [N [personality]]      N defaults to 10000000
 *
 * getppid takes no arguments, so the kernel's seccomp action cache answers it without
 * running the filter once a filter allows it unconditionally; with "personality" the loop
 * calls personality(0xffffffff) (a harmless query) instead, which the default profile
 * allows only for that argument value: the whole BPF program runs on every call.
 *
 * The syscall is issued with inline asm on x86_64 (no libc wrapper in the measured loop);
 * a first call is checked so a filter that denies getppid shows as an error, not as a
 * fast "result". Built static (build.sh) so it runs in a bare busybox rootfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline long raw_syscall1(long nr, long a0) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "0"(nr), "D"(a0) : "rcx", "r11", "memory");
    return ret;
#else
    long r = syscall(nr, a0);
    return r < 0 ? -errno : r;
#endif
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000L;
    if (n <= 0) {
        fprintf(stderr, "getppid: N must be positive\n");
        return 2;
    }
    long nr = SYS_getppid, arg = 0;
    if (argc > 2 && !strcmp(argv[2], "personality")) {
        nr = SYS_personality;
        arg = 0xffffffffL;
    } else if (argc > 2) {
        fprintf(stderr, "getppid: unknown mode %s\n", argv[2]);
        return 2;
    }
    long first = raw_syscall1(nr, arg);
    if (first < 0) {
        fprintf(stderr, "getppid: syscall %ld denied: %s\n", nr, strerror((int)-first));
        return 1;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        raw_syscall1(nr, arg);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("%.2f\n", ns / (double)n);
    return 0;
}

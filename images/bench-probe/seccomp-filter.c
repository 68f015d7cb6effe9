/* bench probe: takes the seccomp filter a runtime installed in a container and runs it in
 * a plain process, so the cost of each runtime's BPF program can be compared in one and
 * the same environment (no namespaces, cgroups or parents that differ between runtimes).
 *
 *   seccomp-filter dump PID FILE        writes the (only) filter of PID, raw sock_filter
 *                                       instructions, to FILE; needs CAP_SYS_ADMIN
 *   seccomp-filter load FILE PROG ARG.. installs FILE as a filter (flags 0, no_new_privs),
 *                                       then execs PROG; an empty FILE installs nothing
 *
 * dump uses PTRACE_SECCOMP_GET_FILTER (Linux >= 4.4) on a seized, interrupted task and
 * refuses a task with more than one filter: the comparison is about one program each.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_INSNS 4096 /* BPF_MAXINSNS */

static int die(const char *what) {
    fprintf(stderr, "seccomp-filter: %s: %s\n", what, strerror(errno));
    return 1;
}

static int dump(pid_t pid, const char *path) {
    static struct sock_filter insns[MAX_INSNS];
    if (ptrace(PTRACE_SEIZE, pid, 0, 0))
        return die("PTRACE_SEIZE");
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0))
        return die("PTRACE_INTERRUPT");
    if (waitpid(pid, NULL, __WALL) < 0)
        return die("waitpid");
    long n = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0L, NULL);
    if (n < 0)
        return die("PTRACE_SECCOMP_GET_FILTER");
    if (n > MAX_INSNS) {
        fprintf(stderr, "seccomp-filter: %ld instructions\n", n);
        return 1;
    }
    /* index 1 exists only when a second filter is stacked on the first */
    if (ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 1L, NULL) >= 0) {
        fprintf(stderr, "seccomp-filter: pid %d has more than one filter\n", pid);
        return 1;
    }
    if (ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0L, insns) != n)
        return die("PTRACE_SECCOMP_GET_FILTER (copy)");
    ptrace(PTRACE_DETACH, pid, 0, 0);
    FILE *out = fopen(path, "wb");
    if (!out)
        return die(path);
    if (fwrite(insns, sizeof insns[0], (size_t)n, out) != (size_t)n || fclose(out))
        return die(path);
    printf("%ld\n", n);
    return 0;
}

static int load(const char *path, char **argv) {
    static struct sock_filter insns[MAX_INSNS];
    FILE *in = fopen(path, "rb");
    if (!in)
        return die(path);
    size_t n = fread(insns, sizeof insns[0], MAX_INSNS, in);
    fclose(in);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L))
        return die("PR_SET_NO_NEW_PRIVS");
    if (n > 0) {
        struct sock_fprog prog = {.len = (unsigned short)n, .filter = insns};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
            return die("seccomp(SECCOMP_SET_MODE_FILTER)");
    }
    execv(argv[0], argv);
    return die(argv[0]);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "dump"))
        return dump((pid_t)atoi(argv[2]), argv[3]);
    if (argc >= 4 && !strcmp(argv[1], "load"))
        return load(argv[2], argv + 3);
    fprintf(stderr, "usage: seccomp-filter dump PID FILE | load FILE PROG [ARG...]\n");
    return 2;
}

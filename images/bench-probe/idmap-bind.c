/* idmap-bind: the legacy helper's idmapped bind mount, one invocation per layer, as
 * `mount --bind -o X-mount.idmap=...` does it in util-linux >= 2.39 (Debian 12 ships 2.38,
 * which lacks the option): a user namespace carrying the mapping is made by a short-lived
 * child, then open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount
 * attach an idmapped clone of SRC on DST in the caller's mount namespace.
 *
 *   idmap-bind FROM:TO:COUNT SRC DST     on-disk ids FROM.. appear as TO.. (uids and gids)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        die(path);
    close(fd);
}

int main(int argc, char **argv) {
    unsigned long from, to, count;
    if (argc != 4 || sscanf(argv[1], "%lu:%lu:%lu", &from, &to, &count) != 3) {
        fprintf(stderr, "usage: idmap-bind FROM:TO:COUNT SRC DST\n");
        return 2;
    }
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        die("pipe2");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        /* The child only holds the user namespace open while the parent maps it. */
        if (unshare(CLONE_NEWUSER) < 0)
            _exit(1);
        char c = 1;
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c;
    if (read(ready[0], &c, 1) != 1)
        die("child unshare(CLONE_NEWUSER)");
    char path[64], map[96];
    snprintf(map, sizeof map, "%lu %lu %lu\n", from, to, count);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)child);
    write_file(path, map);
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)child);
    write_file(path, map);
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)child);
    int userns = open(path, O_RDONLY | O_CLOEXEC);
    if (userns < 0)
        die(path);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);

    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, argv[2], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0)
        die("open_tree");
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        die("mount_setattr(MOUNT_ATTR_IDMAP)");
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, argv[3], MOVE_MOUNT_F_EMPTY_PATH) < 0)
        die("move_mount");
    return 0;
}

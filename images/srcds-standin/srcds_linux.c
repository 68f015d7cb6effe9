/* A stand-in for Valve's srcds_linux (Left 4 Dead 2 dedicated server), built as a
 * 32-bit i386 static program like the real one. It does what the runtime's tests and
 * demo need from a game server:
 *
 *   - parses -game DIR, -port N / +hostport N, +ip ADDR, +map NAME,
 *     +servercfgfile FILE / +exec FILE (other arguments are accepted and ignored);
 *   - reads DIR/cfg/server.cfg (or the named file) and the files it `exec`s:
 *     hostname "...", map NAME, sv_... settings, maxplayers N;
 *   - binds UDP ip:port and answers Source engine A2S_INFO queries, with the challenge
 *     handshake servers have required since 2020 (S2C_CHALLENGE 'A', then the info);
 *   - appends one line per query to DIR/logs/a2s.log;
 *   - like the real server, says it falls back to LAN-only without
 *     $HOME/.steam/sdk32/steamclient.so (Steam registration needs it);
 *   - exits 0 within a second of SIGINT or SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static char hostname[128] = "Left 4 Dead 2";
static char map[64] = "c1m1_hotel";
static char game[64] = "left4dead2";
static int maxplayers = 8;

/* Copies the value after `key` (optionally quoted) on a cfg line into out. */
static int cfg_value(const char *line, const char *key, char *out, size_t len) {
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0 || (line[k] != ' ' && line[k] != '\t'))
        return 0;
    const char *v = line + k;
    while (*v == ' ' || *v == '\t') v++;
    int quoted = (*v == '"');
    if (quoted) v++;
    size_t n = 0;
    while (v[n] && v[n] != '\n' && v[n] != '\r' && (quoted ? v[n] != '"' : (v[n] != ' ' && v[n] != '/')))
        n++;
    if (n >= len) n = len - 1;
    memcpy(out, v, n);
    out[n] = 0;
    return 1;
}

static void read_cfg(const char *name, int depth) {
    char path[512], line[512], value[256];
    if (depth > 8) return;
    snprintf(path, sizeof path, "%s/cfg/%s", game, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "srcds: %s: %s\n", path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f)) {
        char *l = line;
        while (*l == ' ' || *l == '\t') l++;
        if (cfg_value(l, "hostname", value, sizeof value))
            snprintf(hostname, sizeof hostname, "%.127s", value);
        else if (cfg_value(l, "map", value, sizeof value))
            snprintf(map, sizeof map, "%.63s", value);
        else if (cfg_value(l, "maxplayers", value, sizeof value) || cfg_value(l, "sv_maxplayers", value, sizeof value))
            maxplayers = atoi(value);
        else if (cfg_value(l, "exec", value, sizeof value))
            read_cfg(value, depth + 1);
    }
    fclose(f);
}

static size_t put_str(uint8_t *p, const char *s) {
    size_t n = strlen(s) + 1;
    memcpy(p, s, n);
    return n;
}

static void log_query(const struct sockaddr_in *from, const char *what) {
    char path[512], when[64];
    snprintf(path, sizeof path, "%s/logs", game);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/logs/a2s.log", game);
    FILE *f = fopen(path, "a");
    if (!f) return;
    time_t t = time(NULL);
    strftime(when, sizeof when, "%m/%d/%Y - %H:%M:%S", gmtime(&t));
    fprintf(f, "L %s: %s from %s:%d\n", when, what, inet_ntoa(from->sin_addr), ntohs(from->sin_port));
    fclose(f);
}

int main(int argc, char **argv) {
    const char *ip = "0.0.0.0", *cfg = "server.cfg";
    int port = 27015;
    char map_arg[64] = "";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = (i + 1 < argc) ? argv[i + 1] : NULL;
        if (!next) break;
        if (!strcmp(a, "-game")) { snprintf(game, sizeof game, "%.63s", next); i++; }
        else if (!strcmp(a, "-port") || !strcmp(a, "+hostport")) { port = atoi(next); i++; }
        else if (!strcmp(a, "+ip")) { ip = next; i++; }
        else if (!strcmp(a, "+map")) { snprintf(map_arg, sizeof map_arg, "%.63s", next); i++; }
        else if (!strcmp(a, "+servercfgfile") || !strcmp(a, "+exec")) { cfg = next; i++; }
    }
    read_cfg(cfg, 0);
    const char *home = getenv("HOME");
    char steamclient[512];
    snprintf(steamclient, sizeof steamclient, "%s/.steam/sdk32/steamclient.so", home ? home : "");
    if (access(steamclient, R_OK) != 0)
        printf("srcds stand-in: %s missing: LAN only, no Steam registration\n", steamclient);
    else
        printf("srcds stand-in: steamclient.so found\n");
    if (map_arg[0]) memcpy(map, map_arg, sizeof map);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (fd < 0 || inet_pton(AF_INET, ip, &addr.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, "srcds: cannot bind %s:%d: %s\n", ip, port, strerror(errno));
        return 1;
    }
    printf("srcds stand-in: \"%s\" on %s:%d, map %s, game %s\n", hostname, ip, port, map, game);
    fflush(stdout);

    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    uint32_t challenge = (uint32_t)rand() ^ 0x5a5a1234u;
    static const char query[] = "\xff\xff\xff\xff" "TSource Engine Query";
    const size_t qlen = sizeof query; /* includes the terminating NUL */

    while (!stop) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) continue;
        uint8_t in[1400], out[1400];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)&from, &fl);
        if (n < (ssize_t)qlen || memcmp(in, query, qlen) != 0) continue;
        uint32_t got = 0;
        if (n >= (ssize_t)qlen + 4) memcpy(&got, in + qlen, 4);
        size_t o = 0;
        memcpy(out, "\xff\xff\xff\xff", 4);
        o = 4;
        if (got != challenge) {
            out[o++] = 'A';
            memcpy(out + o, &challenge, 4);
            o += 4;
            sendto(fd, out, o, 0, (struct sockaddr *)&from, fl);
            log_query(&from, "A2S_INFO challenge");
            continue;
        }
        out[o++] = 'I';
        out[o++] = 17; /* protocol */
        o += put_str(out + o, hostname);
        o += put_str(out + o, map);
        o += put_str(out + o, game);
        o += put_str(out + o, "Left 4 Dead 2");
        uint16_t appid = 550;
        memcpy(out + o, &appid, 2);
        o += 2;
        out[o++] = 0;                        /* players */
        out[o++] = (uint8_t)maxplayers;      /* max players */
        out[o++] = 0;                        /* bots */
        out[o++] = 'd';                      /* dedicated */
        out[o++] = 'l';                      /* linux */
        out[o++] = 0;                        /* no password */
        out[o++] = 1;                        /* VAC */
        o += put_str(out + o, "2.2.4.3");
        out[o++] = 0x80;                     /* EDF: port follows */
        uint16_t gport = (uint16_t)port;
        memcpy(out + o, &gport, 2);
        o += 2;
        sendto(fd, out, o, 0, (struct sockaddr *)&from, fl);
        log_query(&from, "A2S_INFO");
    }
    printf("srcds stand-in: shutting down\n");
    return 0;
}

/* pilot-spawner: starts and reaps an agent's plain units outside the agent's interpreter.
 *
 * Built by pilot.agent.native (cc -O2) the first time an agent needs it; see that module for
 * when it is used. One thread, no allocation on the start path beyond the request itself.
 *
 * Requests on stdin, one per line; fields separated by NUL bytes:
 *   S <tag> <sandbox> <stdout path> <stderr path or empty: the stdout file> <argv...>
 *       queue a unit: started, in order, when a slot token is free and the lease holds
 *   T                  one more slot token (returned with "r" when nothing is queued)
 *   K <tag> <signum>   signal the process group of a running unit
 *   D <tag>            drop a queued unit ("d <tag>"; nothing if it started already)
 *   L <deadline>       start nothing once CLOCK_MONOTONIC passes <deadline> (seconds; 0: now)
 *   Q                  drop every queued unit ("d" each), then "q"
 *   W <count>          hold routine events up to FLUSH_SECONDS while more than <count> units
 *                      are queued (default: write every event at once)
 *   end of stdin       SIGTERM every unit's group, SIGKILL after a second, reap, "x ...", exit
 * Events on stdout, one per line, space separated:
 *   s <tag> <pid> <time>            started (wall-clock seconds)
 *   f <tag> <step> <errno>          not started (step m: mkdir, o: open, x: spawn); the slot
 *                                   token stays here
 *   e <tag> <status> <time> <kept>  ended: exit code, or minus the signal; kept 0: its token
 *                                   came back with it
 *   r                               a token came back unused
 *   d <tag>, q                      see D and Q
 *   x <utime> <stime> <cutime> <cstime>   its CPU seconds, last line
 * A unit killed by SIGTERM, SIGKILL, SIGHUP or SIGINT that was not sent through K suggests the
 * allocation is being torn down: nothing starts for the next half second.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct unit {
    long tag;
    pid_t pid;
    int signaled;
    char *line;      /* the request, owned */
    char *sandbox, *out, *err;
    char **argv;
    struct unit *next;
};

static struct unit *queue_head, *queue_tail, *running;
static long tokens;        /* slot tokens not used by a running unit */
static double lease = 1e300, paused_until;
static char *outbuf;
static size_t outlen, outcap;
/* Routine events (a start, an end whose token stays) wait up to FLUSH_SECONDS, so the agent
 * wakes for a batch, not for each unit; the rest, and any while the queue is low, go at once. */
#define FLUSH_SECONDS 0.02
static double unflushed_since;
static int urgent;
static long queued, low_water = LONG_MAX;
static int devnull = -1;

static double clock_of(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(outbuf + outlen, outcap - outlen, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < outcap - outlen) {
            if (!outlen) unflushed_since = clock_of(CLOCK_MONOTONIC);
            if (fmt[0] != 's' && !(fmt[0] == 'e' && outbuf[outlen + (size_t)n - 2] == '1')) urgent = 1;
            outlen += (size_t)n;
            return;
        }
        outcap = outcap * 2 + (n > 0 ? (size_t)n : 0);
        outbuf = realloc(outbuf, outcap);
        if (!outbuf) _exit(70);
    }
}

static void flush_out(void) {
    size_t done = 0;
    while (done < outlen) {
        ssize_t n = write(1, outbuf + done, outlen - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            break; /* the agent is gone: end of stdin ends us */
        }
        done += (size_t)n;
    }
    outlen = 0;
    urgent = 0;
}

static void free_unit(struct unit *u) {
    free(u->argv);
    free(u->line);
    free(u);
}

/* Split a request line (NUL-separated fields) into at most max fields; their count. */
static int fields(char *line, size_t len, char **out, int max) {
    int n = 0;
    char *p = line, *end = line + len;
    while (p <= end && n < max) {
        out[n++] = p;
        char *z = memchr(p, '\0', (size_t)(end - p));
        if (!z) break;
        p = z + 1;
    }
    return n;
}

static void queue_unit(char *line, size_t len) {
    int count = 1;
    for (size_t i = 0; i < len; i++) count += line[i] == '\0';
    if (count < 6) {
        fprintf(stderr, "pilot-spawner: malformed start request\n");
        free(line);
        return;
    }
    char **f = malloc(sizeof(char *) * (size_t)(count + 1));
    struct unit *u = calloc(1, sizeof *u);
    if (!f || !u) _exit(70);
    fields(line, len, f, count);
    u->tag = strtol(f[1], NULL, 10);
    u->sandbox = f[2];
    u->out = f[3];
    u->err = f[4];
    /* argv: the fields after the fifth, in place (the array is reused, shifted) */
    memmove(f, f + 5, sizeof(char *) * (size_t)(count - 5));
    f[count - 5] = NULL;
    u->argv = f;
    u->line = line;
    if (queue_tail) queue_tail->next = u; else queue_head = u;
    queue_tail = u;
    queued++;
}

static int open_output(const char *path) {
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
}

/* Start u; 0 when started (it is then running), else the errno and step were reported. */
static int start(struct unit *u) {
    if (mkdir(u->sandbox, 0777) != 0 && errno != EEXIST) {
        emit("f %ld m %d\n", u->tag, errno);
        return -1;
    }
    int out = open_output(u->out);
    if (out < 0) {
        emit("f %ld o %d\n", u->tag, errno);
        return -1;
    }
    int err = out;
    if (u->err[0]) {
        err = open_output(u->err);
        if (err < 0) {
            emit("f %ld o %d\n", u->tag, errno);
            close(out);
            return -1;
        }
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, reset;
    sigemptyset(&none);
    sigemptyset(&reset);
    int defaults[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGXFSZ};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) sigaddset(&reset, defaults[i]);
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addchdir_np(&actions, u->sandbox);
    posix_spawn_file_actions_adddup2(&actions, devnull, 0);
    posix_spawn_file_actions_adddup2(&actions, out, 1);
    posix_spawn_file_actions_adddup2(&actions, err, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &reset);
    pid_t pid;
    int rc = posix_spawnp(&pid, u->argv[0], &actions, &attr, u->argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    close(out);
    if (err != out) close(err);
    if (rc != 0) {
        emit("f %ld x %d\n", u->tag, rc);
        return -1;
    }
    u->pid = pid;
    emit("s %ld %d %.6f\n", u->tag, (int)pid, clock_of(CLOCK_REALTIME));
    return 0;
}

/* Start queued units while tokens are free, the lease holds and no teardown pause is on. */
static void start_queued(void) {
    while (queue_head && tokens > 0) {
        double now = clock_of(CLOCK_MONOTONIC);
        if (now >= lease || now < paused_until) return;
        struct unit *u = queue_head;
        queue_head = u->next;
        if (!queue_head) queue_tail = NULL;
        u->next = NULL;
        queued--;
        if (start(u) != 0) {
            free_unit(u);
            continue;
        }
        tokens--;
        u->next = running;
        running = u;
    }
}

static void return_idle_tokens(void) {
    if (queue_head) return;
    for (; tokens > 0; tokens--) emit("r\n");
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct unit **link = &running;
        while (*link && (*link)->pid != pid) link = &(*link)->next;
        struct unit *u = *link;
        if (!u) continue;
        *link = u->next;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        if (WIFSIGNALED(status) && !u->signaled) {
            int s = WTERMSIG(status);
            if (s == SIGTERM || s == SIGKILL || s == SIGHUP || s == SIGINT)
                paused_until = clock_of(CLOCK_MONOTONIC) + 0.5;
        }
        tokens++;
        int kept = queue_head != NULL;
        if (!kept) tokens--;
        emit("e %ld %d %.6f %d\n", u->tag, code, clock_of(CLOCK_REALTIME), kept);
        free_unit(u);
    }
}

static void drop(long tag) {
    struct unit **link = &queue_head, *prev = NULL;
    while (*link && (*link)->tag != tag) {
        prev = *link;
        link = &(*link)->next;
    }
    struct unit *u = *link;
    if (!u) return;
    *link = u->next;
    if (queue_tail == u) queue_tail = prev;
    queued--;
    emit("d %ld\n", tag);
    free_unit(u);
}

static void signal_unit(long tag, int signum) {
    for (struct unit *u = running; u; u = u->next)
        if (u->tag == tag) {
            u->signaled = 1;
            kill(-u->pid, signum);
            return;
        }
}

static void handle(char *line, size_t len) {
    char *f[3] = {0};
    switch (line[0]) {
    case 'S':
        queue_unit(line, len);
        return;
    case 'T':
        tokens++;
        break;
    case 'K':
        if (fields(line, len, f, 3) == 3) signal_unit(strtol(f[1], NULL, 10), atoi(f[2]));
        break;
    case 'D':
        if (fields(line, len, f, 2) == 2) drop(strtol(f[1], NULL, 10));
        break;
    case 'L':
        if (fields(line, len, f, 2) == 2) lease = strtod(f[1], NULL);
        break;
    case 'W':
        if (fields(line, len, f, 2) == 2) low_water = strtol(f[1], NULL, 10);
        break;
    case 'Q':
        while (queue_head) drop(queue_head->tag);
        emit("q\n");
        break;
    default:
        fprintf(stderr, "pilot-spawner: unknown request %c\n", line[0]);
    }
    free(line);
}

static void finish(void) {
    for (struct unit *u = running; u; u = u->next) kill(-u->pid, SIGTERM);
    double deadline = clock_of(CLOCK_MONOTONIC) + 1.0;
    while (running && clock_of(CLOCK_MONOTONIC) < deadline) {
        reap();
        if (running) usleep(10000);
    }
    for (struct unit *u = running; u; u = u->next) kill(-u->pid, SIGKILL);
    while (running) {
        struct unit *before = running;
        reap();
        if (running == before) usleep(1000);
    }
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
#define SECONDS(tv) ((double)(tv).tv_sec + (tv).tv_usec / 1e6)
    emit("x %.6f %.6f %.6f %.6f\n", SECONDS(self.ru_utime), SECONDS(self.ru_stime),
         SECONDS(children.ru_utime), SECONDS(children.ru_stime));
    flush_out();
}

int main(void) {
    signal(SIGINT, SIG_IGN); /* the agent decides; end of stdin stops us */
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (sfd < 0 || devnull < 0) {
        perror("pilot-spawner");
        return 71;
    }
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    outcap = 65536;
    outbuf = malloc(outcap);
    size_t incap = 65536, inlen = 0;
    char *in = malloc(incap);
    if (!outbuf || !in) return 70;
    int open_input = 1;
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    while (open_input) {
        double now = clock_of(CLOCK_MONOTONIC);
        int timeout = -1;
        if (queue_head && tokens > 0 && now < lease && now < paused_until)
            timeout = (int)((paused_until - now) * 1000) + 1;
        else if (queue_head && tokens > 0 && now >= lease)
            timeout = 100; /* a lease ran out: look again for a renewal */
        if (outlen) { /* events held back: write them FLUSH_SECONDS after the first at the latest */
            int due = (int)((unflushed_since + FLUSH_SECONDS - now) * 1000) + 1;
            if (timeout < 0 || due < timeout) timeout = due > 0 ? due : 0;
        }
        struct pollfd fds[2] = {{.fd = 0, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(fds, 2, timeout) < 0 && errno != EINTR) break;
        struct signalfd_siginfo info;
        while (read(sfd, &info, sizeof info) > 0) {}
        reap();
        for (;;) {
            if (incap - inlen < 4096) {
                incap *= 2;
                in = realloc(in, incap);
                if (!in) return 70;
            }
            ssize_t n = read(0, in + inlen, incap - inlen);
            if (n > 0) {
                inlen += (size_t)n;
                continue;
            }
            if (n == 0) open_input = 0;
            else if (errno == EINTR) continue;
            break;
        }
        size_t at = 0;
        for (;;) {
            char *nl = memchr(in + at, '\n', inlen - at);
            if (!nl) break;
            size_t len = (size_t)(nl - (in + at));
            char *line = malloc(len + 1);
            if (!line) return 70;
            memcpy(line, in + at, len);
            line[len] = '\0';
            if (len) handle(line, len); else free(line);
            at += len + 1;
        }
        memmove(in, in + at, inlen - at);
        inlen -= at;
        start_queued();
        return_idle_tokens();
        if (urgent || queued <= low_water || clock_of(CLOCK_MONOTONIC) >= unflushed_since + FLUSH_SECONDS)
            flush_out();
    }
    while (queue_head) drop(queue_head->tag);
    finish();
    return 0;
}

/* pilot-spawner: starts and reaps an agent's plain units outside the agent's interpreter.
 *
 * Built by pilot.agent.native (cc -O2 -pthread) the first time an agent needs it; see that
 * module for when it is used. The main thread reads requests and writes events; each slot token
 * in use has a thread that starts a unit, blocks in waitpid for it, and goes on to the next
 * queued unit at once (no hand-off between threads while work is queued).
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
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
static size_t path_length; /* of $PATH, for execvp's buffer */

/* All of the above is shared: threads hold mu to touch it. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work;  /* a unit may start: for threads waiting without one */
static int stopping, wake_fd = -1;
static long threads, idle_threads, held; /* held: tokens here, used or not */

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
            int was_empty = !outlen, was_urgent = urgent;
            if (!outlen) unflushed_since = clock_of(CLOCK_MONOTONIC);
            if (fmt[0] != 's' && !(fmt[0] == 'e' && outbuf[outlen + (size_t)n - 2] == '1')) urgent = 1;
            if (queued <= low_water) urgent = 1; /* the agent refills the queue now, not later */
            outlen += (size_t)n;
            if (was_empty || (urgent && !was_urgent)) { /* the main thread writes it or sets a timer */
                uint64_t one = 1;
                if (write(wake_fd, &one, sizeof one) < 0) {}
            }
            return;
        }
        outcap = outcap * 2 + (n > 0 ? (size_t)n : 0);
        outbuf = realloc(outbuf, outcap);
        if (!outbuf) _exit(70);
    }
}

/* Write the events (mu held; released while writing, so units go on starting). */
static void flush_out(void) {
    static char *spare;
    static size_t spare_cap;
    char *data = outbuf;
    size_t len = outlen, data_cap = outcap;
    outbuf = spare ? spare : malloc(outcap);
    if (!outbuf) _exit(70);
    if (spare) outcap = spare_cap;
    spare = NULL;
    outlen = 0;
    urgent = 0;
    pthread_mutex_unlock(&mu);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(1, data + done, len - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            break; /* the agent is gone: end of stdin ends us */
        }
        done += (size_t)n;
    }
    pthread_mutex_lock(&mu);
    spare = data;
    spare_cap = data_cap;
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

/* What a slot thread hands the child it clones, and what the child reports back (the memory is
 * shared until the child execs or exits). */
struct spawn_args {
    const struct unit *u;
    int out, err;
    volatile int failure;
};

/* The child, on its slot thread's spare stack with every signal blocked: the ignored signals
 * back to their defaults, its own process group, the sandbox as working directory, the files
 * on 0-2, then exec. On failure: the errno in the shared arguments, exit 127. */
static int child_main(void *arg) {
    struct spawn_args *a = arg;
    static const int defaults[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGXFSZ};
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) sigaction(defaults[i], &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    if (setpgid(0, 0) == 0 && chdir(a->u->sandbox) == 0 && dup2(devnull, 0) == 0 && dup2(a->out, 1) == 1 &&
        dup2(a->err, 2) == 2) {
#ifdef SYS_close_range /* glibc before 2.34 has no wrapper; without the call (a kernel before 5.9)
                         every descriptor of ours above 2 is close-on-exec anyway */
        syscall(SYS_close_range, 3U, ~0U, 0U);
#endif
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(a->u->argv[0], a->u->argv);
    }
    a->failure = errno ? errno : EINVAL;
    _exit(127);
}

/* Clone a child that shares our memory until it execs (as posix_spawn does), on a stack kept
 * per slot thread rather than mapped and unmapped per unit (an unmap in a threaded process
 * interrupts every CPU it ran on): 0 with *pid set, else the errno. */
static int spawn(const struct unit *u, int out, int err, pid_t *pid) {
    static __thread char *stack;
    static __thread size_t stack_size;
    size_t argc = 0;
    while (u->argv[argc]) argc++;
    /* execvp's own needs: a path buffer, and a copy of argv when it falls back to /bin/sh */
    size_t need = 65536 + path_length + (argc + 2) * sizeof(char *);
    need = (need + 4095) & ~(size_t)4095;
    if (need > stack_size) {
        free(stack);
        stack = malloc(need);
        stack_size = stack ? need : 0;
        if (!stack) return ENOMEM;
    }
    struct spawn_args a = {.u = u, .out = out, .err = err, .failure = 0};
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t child = clone(child_main, stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    int failure = child < 0 ? errno : a.failure;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (child > 0 && failure) {
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
    }
    if (!failure) *pid = child;
    return failure;
}

/* Start u (without mu): 0 when started (u->pid set), else the errno; *step says where. */
static int start(struct unit *u, char *step) {
    *step = 'm';
    if (mkdir(u->sandbox, 0777) != 0 && errno != EEXIST) return errno;
    *step = 'o';
    int out = open_output(u->out);
    if (out < 0) return errno;
    int err = out;
    if (u->err[0]) {
        err = open_output(u->err);
        if (err < 0) {
            int failure = errno;
            close(out);
            return failure;
        }
    }
    *step = 'x';
    int rc = spawn(u, out, err, &u->pid);
    close(out);
    if (err != out) close(err);
    return rc;
}

/* Whether a queued unit may start now: a free token, the lease holding, no teardown pause. */
static int startable(double now) {
    return queue_head && tokens > 0 && now < lease && now >= paused_until;
}

static void return_idle_tokens(void) {
    if (queue_head) return;
    for (; tokens > 0; tokens--, held--) emit("r\n");
}

/* The unit u ended with status (mu held): report it; its token stays while work is queued. */
static void ended(struct unit *u, int status) {
    struct unit **link = &running;
    while (*link != u) link = &(*link)->next;
    *link = u->next;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    if (WIFSIGNALED(status) && !u->signaled) {
        int s = WTERMSIG(status);
        if (s == SIGTERM || s == SIGKILL || s == SIGHUP || s == SIGINT)
            paused_until = clock_of(CLOCK_MONOTONIC) + 0.5;
    }
    tokens++;
    int kept = queue_head != NULL;
    if (!kept) {
        tokens--;
        held--;
    }
    emit("e %ld %d %.6f %d\n", u->tag, code, clock_of(CLOCK_REALTIME), kept);
    free_unit(u);
}

/* A slot thread: start the next unit, wait for it, report; again while units are queued. */
static void *slot_thread(void *unused) {
    (void)unused;
    pthread_mutex_lock(&mu);
    for (;;) {
        double now = clock_of(CLOCK_MONOTONIC);
        if (stopping) break;
        if (!startable(now)) {
            idle_threads++;
            if (queue_head && tokens > 0) { /* held by the lease or a pause: look again soon */
                double until = now < paused_until ? paused_until : now + 0.1;
                struct timespec ts = {(time_t)until, (long)((until - (double)(time_t)until) * 1e9)};
                pthread_cond_timedwait(&work, &mu, &ts);
            } else {
                pthread_cond_wait(&work, &mu);
            }
            idle_threads--;
            continue;
        }
        struct unit *u = queue_head;
        queue_head = u->next;
        if (!queue_head) queue_tail = NULL;
        u->next = NULL;
        queued--;
        tokens--;
        pthread_mutex_unlock(&mu);
        char step;
        int failure = start(u, &step);
        double at = clock_of(CLOCK_REALTIME);
        pthread_mutex_lock(&mu);
        if (failure) {
            emit("f %ld %c %d\n", u->tag, step, failure);
            tokens++; /* the token stays: the next queued unit may use it */
            return_idle_tokens();
            free_unit(u);
            continue;
        }
        emit("s %ld %d %.6f\n", u->tag, (int)u->pid, at);
        u->next = running;
        running = u;
        pthread_mutex_unlock(&mu);
        siginfo_t info;
        /* WNOWAIT: it stays a zombie, so its pid (a K request's target) cannot be reused yet */
        while (waitid(P_PID, (id_t)u->pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {}
        pthread_mutex_lock(&mu);
        int status = 0;
        while (waitpid(u->pid, &status, 0) < 0 && errno == EINTR) {}
        ended(u, status);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Make sure a thread will take the startable units (mu held). */
static void wake_slots(void) {
    if (!startable(clock_of(CLOCK_MONOTONIC))) return;
    if (idle_threads > 0) {
        pthread_cond_broadcast(&work);
        return;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    while (threads < held && pthread_create(&thread, &attr, slot_thread, NULL) == 0) threads++; /* one per token */
    pthread_attr_destroy(&attr);
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
        held++;
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

/* Wait (mu held) until no unit runs or the deadline passes; whether none runs. */
static int wait_running(double deadline) {
    while (running && clock_of(CLOCK_MONOTONIC) < deadline) {
        pthread_mutex_unlock(&mu);
        usleep(5000);
        pthread_mutex_lock(&mu);
    }
    return running == NULL;
}

/* End of input (mu held): start nothing more, end what runs, report our CPU. */
static void finish(void) {
    while (queue_head) drop(queue_head->tag);
    stopping = 1;
    pthread_cond_broadcast(&work);
    for (struct unit *u = running; u; u = u->next) kill(-u->pid, SIGTERM);
    if (!wait_running(clock_of(CLOCK_MONOTONIC) + 1.0)) {
        for (struct unit *u = running; u; u = u->next) kill(-u->pid, SIGKILL);
        wait_running(1e300);
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
    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const char *path = getenv("PATH");
    path_length = path ? strlen(path) : 0;
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (devnull < 0 || wake_fd < 0) {
        perror("pilot-spawner");
        return 71;
    }
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&work, &monotonic);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    outcap = 65536;
    outbuf = malloc(outcap);
    size_t incap = 65536, inlen = 0;
    char *in = malloc(incap);
    if (!outbuf || !in) return 70;
    int open_input = 1;
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    pthread_mutex_lock(&mu);
    while (open_input) {
        int timeout = -1;
        if (outlen) { /* events held back: write them FLUSH_SECONDS after the first at the latest */
            int due = (int)((unflushed_since + FLUSH_SECONDS - clock_of(CLOCK_MONOTONIC)) * 1000) + 1;
            timeout = due > 0 ? due : 0;
        }
        pthread_mutex_unlock(&mu);
        struct pollfd fds[2] = {{.fd = 0, .events = POLLIN}, {.fd = wake_fd, .events = POLLIN}};
        int polled = poll(fds, 2, timeout);
        uint64_t wakes;
        if (read(wake_fd, &wakes, sizeof wakes) < 0) {}
        for (;;) { /* read without mu: only this thread touches the input */
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
        pthread_mutex_lock(&mu);
        if (polled < 0 && errno != EINTR) break;
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
        wake_slots();
        return_idle_tokens();
        if (urgent || queued <= low_water || clock_of(CLOCK_MONOTONIC) >= unflushed_since + FLUSH_SECONDS)
            flush_out();
    }
    finish();
    pthread_mutex_unlock(&mu);
    return 0;
}

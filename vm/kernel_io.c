/* The kernel's threads besides the main one:
 * - heartbeat: echoes every message on the hb socket (REP);
 * - control: interrupt_request (stops the running cell as Ctrl-C does), shutdown_request,
 *   kernel_info_request, and an error reply to anything else; served while a cell runs;
 * - output: fds 1 and 2 are pipes; what anything in the process writes there (Lua's print and
 *   io.write, C code, programs started with os.execute) goes out as `stream` messages, in
 *   batches of at most ~50 ms, with the parent header of the request being served. Every
 *   0.2 s (as ipykernel) it also flushes C's stdout buffer, so that a partial line (io.write
 *   without a newline: a progress bar) shows while the cell runs.
 * Every thread is created with SIGINT blocked (inherited from the main thread). */
#define _GNU_SOURCE
#define TDRL_KERNEL_INTERNAL
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernel.h"

#ifdef TDRL_KERNEL_ZMQ
#include <zmq.h>

volatile int kio_shutdown_requested = 0, kio_shutdown_restart = 0;

static volatile int stop_threads = 0;
static volatile int main_done = 0;
static pthread_t main_tid, hb_tid, control_tid, output_tid;
static int threads_started = 0;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void kio_interrupt_main(void) { pthread_kill(main_tid, SIGINT); }

/* ---- output capture ------------------------------------------------------------------------- */

typedef struct {
    int fd; /* read end of the pipe */
    const char *name;
    char *buf;
    size_t n, cap;
} ostream;

static ostream streams[2] = {{-1, "stdout", NULL, 0, 0}, {-1, "stderr", NULL, 0, 0}};
static pthread_mutex_t stream_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *stream_parent = NULL;
static double last_send = 0;

int kio_capture_start(void) {
    int log = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (log >= 0) kw.log_fd = log;
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 2; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            kw_log("cannot create a pipe for %s: %s", streams[i].name, strerror(errno));
            return -1;
        }
        fcntl(p[0], F_SETPIPE_SZ, 1 << 20); /* fewer stalls of a chatty cell; may be refused */
        if (dup2(p[1], i + 1) < 0) {
            kw_log("cannot redirect %s: %s", streams[i].name, strerror(errno));
            return -1;
        }
        close(p[1]);
        fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
        streams[i].fd = p[0];
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* a line printed by a long cell shows up at once */
    setvbuf(stderr, NULL, _IONBF, 0);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) { /* io.read() gets end of input rather than waiting forever */
        dup2(devnull, 0);
        if (devnull != 0) close(devnull);
    }
    return 0;
}

void kio_set_parent(const json_t *parent_header) {
    pthread_mutex_lock(&stream_lock);
    json_decref(stream_parent);
    stream_parent = parent_header ? json_incref((json_t *)parent_header) : NULL;
    pthread_mutex_unlock(&stream_lock);
}

/* Reads what the pipe holds (stream_lock held). Returns the bytes read. */
static size_t drain_locked(ostream *s) {
    size_t total = 0;
    for (;;) {
        if (s->cap - s->n < 65536) {
            size_t cap = s->cap ? s->cap * 2 : 1 << 17;
            char *nb = realloc(s->buf, cap);
            if (nb == NULL) return total;
            s->buf = nb;
            s->cap = cap;
        }
        ssize_t r = read(s->fd, s->buf + s->n, s->cap - s->n);
        if (r > 0) {
            s->n += (size_t)r;
            total += (size_t)r;
            if (s->n > (8u << 20)) return total; /* send before reading more */
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        return total;
    }
}

/* Publishes the buffered text up to the last whole UTF-8 character (stream_lock held). */
static void send_locked(ostream *s, int all) {
    size_t n = all ? s->n : kw_utf8_complete(s->buf, s->n);
    if (n == 0) return;
    json_t *c = json_object();
    json_object_set_new(c, "name", json_string(s->name));
    json_object_set_new(c, "text", kw_string(s->buf, n));
    kw_publish(stream_parent, "stream", c);
    memmove(s->buf, s->buf + n, s->n - n);
    s->n -= n;
}

void kio_flush(void) {
    fflush(stdout);
    fflush(stderr);
    if (streams[0].fd < 0) return;
    pthread_mutex_lock(&stream_lock);
    for (int i = 0; i < 2; i++) {
        drain_locked(&streams[i]);
        send_locked(&streams[i], 0);
    }
    last_send = now_s();
    pthread_mutex_unlock(&stream_lock);
}

/* Flushes stdout's buffer when no other thread holds it: the main thread may be blocked in a
 * write to the pipe while holding the FILE lock, and only this thread drains the pipe, so
 * waiting for the lock could deadlock. The pipe was just drained: the flush (at most one
 * buffer) fits. */
static void flush_stdio(void) {
    if (ftrylockfile(stdout) != 0) return;
    fflush_unlocked(stdout);
    funlockfile(stdout);
}

static void *output_thread(void *arg) {
    (void)arg;
    double last_flush = now_s();
    while (!stop_threads) {
        struct pollfd p[2] = {{streams[0].fd, POLLIN, 0}, {streams[1].fd, POLLIN, 0}};
        int r = poll(p, 2, 50);
        if (r < 0 && errno != EINTR) break;
        pthread_mutex_lock(&stream_lock);
        int got = 0;
        for (int i = 0; i < 2; i++)
            if (r > 0 && (p[i].revents & (POLLIN | POLLHUP))) got |= drain_locked(&streams[i]) > 0;
        double t = now_s();
        int big = streams[0].n > (1u << 20) || streams[1].n > (1u << 20);
        if (!got || big || t - last_send >= 0.05) {
            for (int i = 0; i < 2; i++) send_locked(&streams[i], 0);
            last_send = t;
        }
        pthread_mutex_unlock(&stream_lock);
        if (t - last_flush >= 0.2) { /* what it writes is read on the next turn */
            flush_stdio();
            last_flush = t;
        }
    }
    return NULL;
}

/* ---- heartbeat ------------------------------------------------------------------------------ */

static void *hb_thread(void *arg) {
    (void)arg;
    while (!stop_threads) {
        zmq_pollitem_t it = {kw.hb, 0, ZMQ_POLLIN, 0};
        int r = zmq_poll(&it, 1, 200);
        if (r < 0) {
            if (zmq_errno() == ETERM) break;
            continue;
        }
        if (!(it.revents & ZMQ_POLLIN)) continue;
        for (;;) { /* echo every part */
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, kw.hb, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            int more = zmq_msg_more(&m);
            zmq_msg_send(&m, kw.hb, more ? ZMQ_SNDMORE : 0);
            zmq_msg_close(&m);
            if (!more) break;
        }
    }
    return NULL;
}

/* ---- control -------------------------------------------------------------------------------- */

static void control_handle(kmsg *m) {
    const char *t = m->msg_type;
    kw_status(m->header, "busy");
    if (strcmp(t, "interrupt_request") == 0) {
        kio_interrupt_main();
        kw_send(kw.control, m, "interrupt_reply", json_pack("{s:s}", "status", "ok"));
    } else if (strcmp(t, "shutdown_request") == 0) {
        int restart = json_is_true(json_object_get(m->content, "restart"));
        kw_send(kw.control, m, "shutdown_reply", json_pack("{s:s, s:b}", "status", "ok", "restart", restart));
        kio_shutdown_restart = restart;
        kio_shutdown_requested = 1;
        kio_interrupt_main(); /* a running cell stops; the shell loop then ends */
    } else if (strcmp(t, "kernel_info_request") == 0) {
        kw_send(kw.control, m, "kernel_info_reply", kernel_info_content());
    } else {
        size_t l = strlen(t);
        char reply[160], why[256];
        if (l > 8 && l < 128 && strcmp(t + l - 8, "_request") == 0) {
            snprintf(reply, sizeof reply, "%.*s_reply", (int)(l - 8), t);
            snprintf(why, sizeof why, "the control channel does not serve '%.100s'", t);
            kw_send_error(kw.control, m, reply, "UnknownMessageType", why);
        } else {
            kw_log("control: ignored a '%s' message", t);
        }
    }
    kw_status(m->header, "idle");
}

static void *control_thread(void *arg) {
    (void)arg;
    while (!stop_threads) {
        zmq_pollitem_t it = {kw.control, 0, ZMQ_POLLIN, 0};
        int r = zmq_poll(&it, 1, 200);
        if (r < 0) {
            if (zmq_errno() == ETERM) break;
            continue;
        }
        if (kio_shutdown_requested) { /* the cell has not stopped: give it a few seconds */
            static double asked = 0;
            if (asked == 0) asked = now_s();
            if (!main_done && now_s() - asked > 5) {
                kw_log("shutdown: the running cell did not stop in 5 s; exiting");
                kio_flush();
                _exit(0);
            }
        }
        if (!(it.revents & ZMQ_POLLIN)) continue;
        kmsg m;
        char why[512];
        int got = kw_recv(kw.control, &m, false, why, sizeof why);
        if (got < 0)
            kw_reply_malformed(kw.control, &m, why);
        else if (got > 0)
            control_handle(&m);
        kw_free(&m);
    }
    return NULL;
}

int kio_threads_start(pthread_t main_thread) {
    main_tid = main_thread;
    stop_threads = 0;
    if (pthread_create(&hb_tid, NULL, hb_thread, NULL) != 0) return -1;
    if (pthread_create(&control_tid, NULL, control_thread, NULL) != 0) return -1;
    if (streams[0].fd >= 0 && pthread_create(&output_tid, NULL, output_thread, NULL) != 0) return -1;
    threads_started = 1;
    return 0;
}

void kio_threads_stop(void) {
    main_done = 1;
    kio_flush();
    stop_threads = 1;
    if (!threads_started) return;
    pthread_join(hb_tid, NULL);
    pthread_join(control_tid, NULL);
    if (streams[0].fd >= 0) pthread_join(output_tid, NULL);
    threads_started = 0;
    kio_flush();
}

#else
typedef int kernel_io_needs_zmq; /* built without ZeroMQ: see kernel.c */
#endif

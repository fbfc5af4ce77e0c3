/* The Jupyter wire protocol (messaging 5.3): connection file, sockets, multipart messages
 * [identities..., "<IDS|MSG>", signature, header, parent_header, metadata, content, buffers...]
 * signed with HMAC over the four JSON frames, and small helpers (ids, dates, UTF-8, base64).
 * A message that cannot be decoded is reported to the caller with its reason; nothing here
 * aborts. */
#define _GNU_SOURCE
#define TDRL_KERNEL_INTERNAL
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "kernel.h"

#ifdef TDRL_KERNEL_ZMQ
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zmq.h>

kwire kw = {.log_fd = 2};

static const char DELIM[] = "<IDS|MSG>";

void kw_log(const char *fmt, ...) {
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "tdrl kernel: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + ((size_t)m < sizeof buf - (size_t)n - 1 ? (size_t)m : sizeof buf - (size_t)n - 2);
    buf[len++] = '\n';
    ssize_t w = write(kw.log_fd, buf, len);
    (void)w;
}

/* ---- helpers -------------------------------------------------------------------------------- */

void kw_uuid(char out[37]) {
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r <= 0) { /* never expected; fall back on the clock and rand() */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            srand((unsigned)(ts.tv_nsec ^ ts.tv_sec ^ getpid()));
            for (; got < sizeof b; got++) b[got] = (unsigned char)rand();
            break;
        }
        got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80); /* variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void kw_now_iso(char out[40]) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%.20s.%06dZ", base, (int)((ts.tv_nsec / 1000) % 1000000));
}

/* Length of a valid UTF-8 sequence at s (n bytes left): 1..4, 0 when invalid, -1 when it is
 * cut short by the end of the buffer. */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    unsigned cp = c & (0x3F >> (len - 1));
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return -1;
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

size_t kw_utf8_complete(const char *s, size_t n) {
    /* only the last 3 bytes can start a cut sequence */
    size_t start = n > 3 ? n - 3 : 0;
    for (size_t i = start; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xC0 && utf8_seq((const unsigned char *)s + i, n - i) < 0) return i;
    }
    return n;
}

json_t *kw_string(const char *s, size_t n) {
    if (s == NULL) return json_string("");
    /* fast path: already valid */
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *out = malloc(n * 3 + 1);
    if (out == NULL) return json_string("");
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int l = utf8_seq(u + i, n - i);
        if (l > 0) {
            memcpy(out + o, u + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3); /* U+FFFD */
            o += 3;
            i++;
        }
    }
    j = json_stringn(out, o);
    free(out);
    return j ? j : json_string("");
}

char *kw_base64(const unsigned char *s, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (out == NULL) return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

size_t kw_cp_to_byte(const char *s, size_t len, long cp) {
    if (cp <= 0) return 0;
    long seen = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (seen == cp) return i;
            seen++;
        }
    }
    return len;
}

long kw_byte_to_cp(const char *s, size_t byte) {
    long cp = 0;
    for (size_t i = 0; i < byte; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) cp++;
    return cp;
}

/* ---- signing -------------------------------------------------------------------------------- */

/* Hex HMAC of the concatenated frames into out (2 * digest size + 1). Returns 0 or -1. */
static int sign(const char *const *parts, const size_t *lens, int n, char *out, size_t out_len) {
    out[0] = '\0';
    if (kw.digest == NULL) return 0;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += lens[i];
    unsigned char *buf = malloc(total ? total : 1);
    if (buf == NULL) return -1;
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + o, parts[i], lens[i]);
        o += lens[i];
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    unsigned char *r = HMAC((const EVP_MD *)kw.digest, kw.key, (int)kw.key_len, buf, total, md, &md_len);
    free(buf);
    if (r == NULL || out_len < 2 * (size_t)md_len + 1) return -1;
    for (unsigned i = 0; i < md_len; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* ---- connection file and sockets ------------------------------------------------------------ */

static void *open_socket(int type, const char *transport, const char *ip, json_int_t port,
                         const char *name) {
    void *s = zmq_socket(kw.ctx, type);
    if (s == NULL) {
        kw_log("cannot create the %s socket: %s", name, zmq_strerror(zmq_errno()));
        return NULL;
    }
    int linger = 1000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    int64_t maxsize = (int64_t)1 << 30; /* a bigger message is dropped by ZeroMQ */
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    char ep[512];
    if (strcmp(transport, "ipc") == 0)
        snprintf(ep, sizeof ep, "ipc://%s-%lld", ip, (long long)port);
    else if (port > 0)
        snprintf(ep, sizeof ep, "%s://%s:%lld", transport, ip, (long long)port);
    else
        snprintf(ep, sizeof ep, "%s://%s:*", transport, ip);
    if (zmq_bind(s, ep) != 0) {
        kw_log("cannot bind the %s socket to %s: %s", name, ep, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    if (port <= 0) {
        char last[512];
        size_t l = sizeof last;
        if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, last, &l) == 0) kw_log("%s channel on %s", name, last);
    }
    return s;
}

int kw_open(const char *path) {
    json_error_t err;
    json_t *cf = json_load_file(path, 0, &err);
    if (cf == NULL) {
        kw_log("cannot read the connection file %s: %s (line %d)", path, err.text, err.line);
        return -1;
    }
    if (!json_is_object(cf)) {
        kw_log("connection file %s: not a JSON object", path);
        json_decref(cf);
        return -1;
    }
    const char *ip = json_string_value(json_object_get(cf, "ip"));
    const char *transport = json_string_value(json_object_get(cf, "transport"));
    const char *key = json_string_value(json_object_get(cf, "key"));
    const char *scheme = json_string_value(json_object_get(cf, "signature_scheme"));
    if (ip == NULL) ip = "127.0.0.1";
    if (transport == NULL) transport = "tcp";
    if (key == NULL) key = "";
    if (scheme == NULL) scheme = "hmac-sha256";
    kw.key_len = strlen(key);
    if (kw.key_len >= sizeof kw.key) {
        kw_log("connection file %s: key too long", path);
        json_decref(cf);
        return -1;
    }
    memcpy(kw.key, key, kw.key_len + 1);
    kw.digest = NULL;
    if (kw.key_len > 0) {
        if (strncmp(scheme, "hmac-", 5) != 0 || (kw.digest = EVP_get_digestbyname(scheme + 5)) == NULL) {
            kw_log("connection file %s: unknown signature scheme '%s'", path, scheme);
            json_decref(cf);
            return -1;
        }
    }
    const char *names[] = {"shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"};
    json_int_t ports[5];
    for (int i = 0; i < 5; i++) {
        json_t *p = json_object_get(cf, names[i]);
        ports[i] = json_is_integer(p) ? json_integer_value(p) : 0;
    }
    kw_uuid(kw.session);
    pthread_mutex_init(&kw.iopub_lock, NULL);
    kw.ctx = zmq_ctx_new();
    if (kw.ctx == NULL) {
        kw_log("cannot create a ZeroMQ context");
        json_decref(cf);
        return -1;
    }
    kw.shell = open_socket(ZMQ_ROUTER, transport, ip, ports[0], "shell");
    kw.iopub = kw.shell ? open_socket(ZMQ_PUB, transport, ip, ports[1], "iopub") : NULL;
    kw.stdin_sock = kw.iopub ? open_socket(ZMQ_ROUTER, transport, ip, ports[2], "stdin") : NULL;
    kw.control = kw.stdin_sock ? open_socket(ZMQ_ROUTER, transport, ip, ports[3], "control") : NULL;
    kw.hb = kw.control ? open_socket(ZMQ_REP, transport, ip, ports[4], "heartbeat") : NULL;
    json_decref(cf);
    if (kw.hb == NULL) {
        kw_close();
        return -1;
    }
    return 0;
}

void kw_close(void) {
    void **socks[] = {&kw.shell, &kw.iopub, &kw.stdin_sock, &kw.control, &kw.hb};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (*socks[i]) {
            zmq_close(*socks[i]);
            *socks[i] = NULL;
        }
    if (kw.ctx) {
        zmq_ctx_term(kw.ctx);
        kw.ctx = NULL;
    }
}

/* ---- receiving ------------------------------------------------------------------------------ */

typedef struct {
    int n, cap;
    zmq_msg_t *f;
} frames;

static void frames_free(frames *fr) {
    for (int i = 0; i < fr->n; i++) zmq_msg_close(&fr->f[i]);
    free(fr->f);
    fr->f = NULL;
    fr->n = fr->cap = 0;
}

/* All the parts of one message. Returns 1, 0 (none waiting), -1 (error). */
static int recv_frames(void *sock, frames *fr, bool wait) {
    memset(fr, 0, sizeof *fr);
    for (;;) {
        if (fr->n == fr->cap) {
            int cap = fr->cap ? fr->cap * 2 : 8;
            zmq_msg_t *nf = realloc(fr->f, (size_t)cap * sizeof *nf);
            if (nf == NULL) {
                frames_free(fr);
                return -1;
            }
            fr->f = nf;
            fr->cap = cap;
        }
        zmq_msg_t *m = &fr->f[fr->n];
        zmq_msg_init(m);
        int flags = (fr->n == 0 && !wait) ? ZMQ_DONTWAIT : 0;
        int r;
        do {
            r = zmq_msg_recv(m, sock, flags);
        } while (r < 0 && zmq_errno() == EINTR && fr->n > 0);
        if (r < 0) {
            int e = zmq_errno();
            zmq_msg_close(m);
            if (fr->n == 0 && (e == EAGAIN || e == EINTR)) {
                frames_free(fr);
                return 0;
            }
            frames_free(fr);
            return -1;
        }
        fr->n++;
        if (!zmq_msg_more(m)) return 1;
        if (fr->n > 4096) { /* absurd: drain the rest and give up */
            zmq_msg_t junk;
            zmq_msg_init(&junk);
            while (zmq_msg_more(&fr->f[fr->n - 1]) || zmq_msg_more(&junk)) {
                zmq_msg_close(&junk);
                zmq_msg_init(&junk);
                if (zmq_msg_recv(&junk, sock, 0) < 0 || !zmq_msg_more(&junk)) break;
            }
            zmq_msg_close(&junk);
            return 1;
        }
    }
}

static json_t *parse_obj(zmq_msg_t *m, const char *what, char *why, size_t why_len) {
    json_error_t err;
    json_t *j = json_loadb(zmq_msg_data(m), zmq_msg_size(m), JSON_DECODE_ANY, &err);
    if (j == NULL) {
        snprintf(why, why_len, "%s is not valid JSON: %s (at byte %d)", what, err.text, err.position);
        return NULL;
    }
    if (!json_is_object(j)) {
        snprintf(why, why_len, "%s is not a JSON object", what);
        json_decref(j);
        return NULL;
    }
    return j;
}

int kw_recv(void *sock, kmsg *m, bool wait, char *why, size_t why_len) {
    memset(m, 0, sizeof *m);
    why[0] = '\0';
    frames fr;
    int r = recv_frames(sock, &fr, wait);
    if (r <= 0) {
        if (r < 0) snprintf(why, why_len, "receive failed: %s", zmq_strerror(zmq_errno()));
        return r;
    }
    int d = -1;
    for (int i = 0; i < fr.n; i++)
        if (zmq_msg_size(&fr.f[i]) == sizeof DELIM - 1 && memcmp(zmq_msg_data(&fr.f[i]), DELIM, sizeof DELIM - 1) == 0) {
            d = i;
            break;
        }
    /* the routing identities (a ROUTER socket always puts one first) */
    int n_ids = d >= 0 ? d : (fr.n > 0 ? 1 : 0);
    m->ids = calloc((size_t)n_ids + 1, sizeof *m->ids);
    m->id_len = calloc((size_t)n_ids + 1, sizeof *m->id_len);
    if (m->ids == NULL || m->id_len == NULL) {
        frames_free(&fr);
        kw_free(m);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    for (int i = 0; i < n_ids; i++) {
        size_t l = zmq_msg_size(&fr.f[i]);
        m->ids[i] = malloc(l + 1);
        if (m->ids[i] == NULL) break;
        memcpy(m->ids[i], zmq_msg_data(&fr.f[i]), l);
        m->id_len[i] = l;
        m->n_ids++;
    }
    int status = -1;
    if (d < 0) {
        snprintf(why, why_len, "no <IDS|MSG> delimiter among %d frames", fr.n);
        goto done;
    }
    if (fr.n - d - 1 < 5) {
        snprintf(why, why_len, "%d frames after the delimiter, expected at least 5 (signature, header, "
                 "parent_header, metadata, content)", fr.n - d - 1);
        goto done;
    }
    zmq_msg_t *sig = &fr.f[d + 1];
    const char *parts[4];
    size_t lens[4];
    for (int i = 0; i < 4; i++) {
        parts[i] = zmq_msg_data(&fr.f[d + 2 + i]);
        lens[i] = zmq_msg_size(&fr.f[d + 2 + i]);
    }
    /* the header first, so that an error reply can name the request */
    char tmp[256];
    m->header = parse_obj(&fr.f[d + 2], "header", tmp, sizeof tmp);
    if (kw.digest != NULL) {
        char want[2 * EVP_MAX_MD_SIZE + 1];
        if (sign(parts, lens, 4, want, sizeof want) != 0) {
            snprintf(why, why_len, "cannot compute the signature");
            goto done;
        }
        size_t wl = strlen(want), gl = zmq_msg_size(sig);
        if (gl != wl || CRYPTO_memcmp(want, zmq_msg_data(sig), wl) != 0) {
            snprintf(why, why_len, "invalid signature (HMAC does not match the connection key)");
            goto done;
        }
    }
    if (m->header == NULL) {
        snprintf(why, why_len, "%s", tmp);
        goto done;
    }
    m->msg_type = json_string_value(json_object_get(m->header, "msg_type"));
    m->msg_id = json_string_value(json_object_get(m->header, "msg_id"));
    if (m->msg_type == NULL || m->msg_type[0] == '\0') {
        snprintf(why, why_len, "the header has no msg_type");
        goto done;
    }
    if (m->msg_id == NULL) {
        snprintf(why, why_len, "the header has no msg_id");
        goto done;
    }
    if ((m->parent = parse_obj(&fr.f[d + 3], "parent_header", why, why_len)) == NULL) goto done;
    if ((m->metadata = parse_obj(&fr.f[d + 4], "metadata", why, why_len)) == NULL) goto done;
    if ((m->content = parse_obj(&fr.f[d + 5], "content", why, why_len)) == NULL) goto done;
    status = 1;
done:
    frames_free(&fr);
    if (status < 0) {
        /* keep ids and the header (when it is an object) for the error reply */
        json_decref(m->parent);
        json_decref(m->metadata);
        json_decref(m->content);
        m->parent = m->metadata = m->content = NULL;
        if (m->header) {
            m->msg_type = json_string_value(json_object_get(m->header, "msg_type"));
            m->msg_id = json_string_value(json_object_get(m->header, "msg_id"));
        }
    }
    return status;
}

void kw_free(kmsg *m) {
    for (int i = 0; i < m->n_ids; i++) free(m->ids[i]);
    free(m->ids);
    free(m->id_len);
    json_decref(m->header);
    json_decref(m->parent);
    json_decref(m->metadata);
    json_decref(m->content);
    memset(m, 0, sizeof *m);
}

/* ---- sending -------------------------------------------------------------------------------- */

static json_t *new_header(const char *type) {
    char id[37], date[40];
    kw_uuid(id);
    kw_now_iso(date);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "msg_id", id, "session", kw.session, "username",
                     "kernel", "date", date, "msg_type", type, "version", KERNEL_PROTOCOL_VERSION);
}

/* Sends ids (may be none), delimiter, signature and the four frames. Steals content. */
static int send_parts(void *sock, char *const *ids, const size_t *id_len, int n_ids, const char *topic,
                      const json_t *parent_header, const char *type, json_t *content) {
    if (content == NULL) content = json_object();
    json_t *header = new_header(type);
    json_t *meta = json_object();
    char *ps[4] = {
        json_dumps(header, JSON_COMPACT),
        parent_header ? json_dumps(parent_header, JSON_COMPACT) : strdup("{}"),
        json_dumps(meta, JSON_COMPACT),
        json_dumps(content, JSON_COMPACT),
    };
    json_decref(header);
    json_decref(meta);
    json_decref(content);
    int rc = -1;
    for (int i = 0; i < 4; i++)
        if (ps[i] == NULL) {
            kw_log("cannot encode a %s message", type);
            goto out;
        }
    const char *parts[4] = {ps[0], ps[1], ps[2], ps[3]};
    size_t lens[4];
    for (int i = 0; i < 4; i++) lens[i] = strlen(ps[i]);
    char sig[2 * EVP_MAX_MD_SIZE + 1];
    if (sign(parts, lens, 4, sig, sizeof sig) != 0) {
        kw_log("cannot sign a %s message", type);
        goto out;
    }
    rc = 0;
    if (topic) rc |= zmq_send(sock, topic, strlen(topic), ZMQ_SNDMORE) < 0;
    for (int i = 0; i < n_ids; i++) rc |= zmq_send(sock, ids[i], id_len[i], ZMQ_SNDMORE) < 0;
    rc |= zmq_send(sock, DELIM, sizeof DELIM - 1, ZMQ_SNDMORE) < 0;
    rc |= zmq_send(sock, sig, strlen(sig), ZMQ_SNDMORE) < 0;
    for (int i = 0; i < 4; i++) rc |= zmq_send(sock, ps[i], lens[i], i < 3 ? ZMQ_SNDMORE : 0) < 0;
    if (rc) rc = -1;
out:
    for (int i = 0; i < 4; i++) free(ps[i]);
    return rc;
}

int kw_send(void *sock, const kmsg *parent, const char *type, json_t *content) {
    return send_parts(sock, parent ? parent->ids : NULL, parent ? parent->id_len : NULL,
                      parent ? parent->n_ids : 0, NULL, parent ? parent->header : NULL, type, content);
}

int kw_publish(const json_t *parent_header, const char *type, json_t *content) {
    char topic[128];
    snprintf(topic, sizeof topic, "kernel.%s.%s", kw.session, type);
    pthread_mutex_lock(&kw.iopub_lock);
    int rc = send_parts(kw.iopub, NULL, NULL, 0, topic, parent_header, type, content);
    pthread_mutex_unlock(&kw.iopub_lock);
    return rc;
}

void kw_status(const json_t *parent_header, const char *state) {
    kw_publish(parent_header, "status", json_pack("{s:s}", "execution_state", state));
}

int kw_send_error(void *sock, const kmsg *req, const char *reply_type, const char *ename, const char *evalue) {
    json_t *c = json_object();
    json_object_set_new(c, "status", json_string("error"));
    json_object_set_new(c, "ename", kw_string(ename, strlen(ename)));
    json_object_set_new(c, "evalue", kw_string(evalue, strlen(evalue)));
    json_t *tb = json_array();
    char line[1024];
    snprintf(line, sizeof line, "%s: %s", ename, evalue);
    json_array_append_new(tb, kw_string(line, strlen(line)));
    json_object_set_new(c, "traceback", tb);
    return kw_send(sock, req, reply_type, c);
}

void kw_reply_malformed(void *sock, kmsg *m, const char *why) {
    const char *type = m->msg_type;
    char reply[128];
    size_t tl = type ? strlen(type) : 0;
    if (type && tl > 8 && tl < sizeof reply && strcmp(type + tl - 8, "_request") == 0)
        snprintf(reply, sizeof reply, "%.*s_reply", (int)(tl - 8), type);
    else
        snprintf(reply, sizeof reply, "error");
    /* the first ones are logged; a flood only now and then */
    static unsigned long count = 0;
    count++;
    if (count <= 10 || count % 1000 == 0)
        kw_log("malformed message%s%s%s: %s%s", type ? " (" : "", type ? type : "", type ? ")" : "", why,
               count == 10 ? " (further ones are logged once every 1000)" : "");
    if (m->n_ids == 0) return;
    /* the parent header only when it came signed and whole */
    kmsg to = *m;
    if (!json_is_object(m->header) || strstr(why, "signature")) to.header = NULL;
    kw_send_error(sock, &to, reply, "MalformedMessage", why);
}

#else
typedef int kernel_wire_needs_zmq; /* built without ZeroMQ: see kernel.c */
#endif

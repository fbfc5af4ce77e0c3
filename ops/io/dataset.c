/* Sources of samples, batch filling, per-channel statistics, the data cache (safetensors with
 * U8 images, mmap'd when opened) and the prefetching loader (one worker thread that fills the
 * next batch while the caller trains on the current one). See data.h. */
#include "data.h"
#include "../checked.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the cache format is written little-endian");

/* ---- construction ------------------------------------------------------------------------- */
static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int check_dims(const char *op, int64_t n, int c, int h, int w, int ntasks) {
    if (n < 0 || c < 1 || c > 4 || h < 1 || w < 1 || h > 65535 || w > 65535 || ntasks < 0 ||
        ntasks > TD_SRC_MAX_TASKS)
        return td_fail_int("%s: bad layout: %lld samples of %dx%dx%d (channels 1-4, sides 1-65535) with %d tasks (0-%d)",
                           op, (long long)n, c, h, w, ntasks, TD_SRC_MAX_TASKS);
    return 0;
}

td_source *td_source_new_bytes(int64_t n, int c, int h, int w, int ntasks, const char *what) {
    if (check_dims("source", n, c, h, w, ntasks)) return NULL;
    size_t per = (size_t)c * h * w, total, nl;
    if (!td_zmul_ok((size_t)n, per, &total) || total > ((uint64_t)1 << 40) || !td_zmul_ok((size_t)n, (size_t)ntasks, &nl))
        return td_fail("source: %lld samples of %zu bytes is too large", (long long)n, per);
    td_source *s = calloc(1, sizeof *s);
    if (!s) return td_fail("source: out of memory");
    s->refcount = 1;
    s->kind = TD_SRC_BYTES;
    s->n = n;
    s->c = c;
    s->h = h;
    s->w = w;
    s->ntasks = ntasks;
    s->what = dupstr(what ? what : "source");
    s->pixels = calloc((size_t)n * per + 1, 1);
    s->labels = calloc((size_t)n * (size_t)ntasks + 1, sizeof(int64_t));
    if (!s->what || !s->pixels || !s->labels) {
        td_source_release(s);
        return td_fail("source: out of memory for %lld samples of %zu bytes", (long long)n, per);
    }
    return s;
}

td_source *td_source_new_files(const char *const *paths, int64_t n, const int64_t *labels, int ntasks, int c, int h,
                               int w, const char *what) {
    if (check_dims("files", n, c, h, w, ntasks)) return NULL;
    if (c != 1 && c != 3) return td_fail("files: channels must be 1 or 3, not %d", c);
    td_source *s = calloc(1, sizeof *s);
    if (!s) return td_fail("files: out of memory");
    s->refcount = 1;
    s->kind = TD_SRC_FILES;
    s->n = n;
    s->c = c;
    s->h = h;
    s->w = w;
    s->ntasks = ntasks;
    s->what = dupstr(what ? what : "files");
    s->paths = calloc((size_t)n + 1, sizeof(char *));
    s->labels = malloc(sizeof(int64_t) * ((size_t)n * (size_t)ntasks + 1));
    if (!s->what || !s->paths || !s->labels) goto oom;
    for (int64_t i = 0; i < n; i++)
        if (!(s->paths[i] = dupstr(paths[i]))) goto oom;
    if (n > 0 && ntasks > 0) memcpy(s->labels, labels, sizeof(int64_t) * (size_t)(n * ntasks));
    return s;
oom:
    td_source_release(s);
    return td_fail("files: out of memory");
}

void td_source_retain(td_source *s) {
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void td_source_release(td_source *s) {
    if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    if (s->map) munmap(s->map, s->map_len);
    else free(s->pixels);
    if (s->paths) {
        for (int64_t i = 0; i < s->n; i++) free(s->paths[i]);
        free(s->paths);
    }
    td_source_release(s->base);
    free(s->labels);
    free(s->what);
    free(s);
}

/* ---- samples ------------------------------------------------------------------------------ */
int td_source_sample_u8(const td_source *s, int64_t i, uint8_t *dst) {
    if (i < 0 || i >= s->n)
        return td_fail_int("source %s: sample %lld out of range 0..%lld", s->what, (long long)i, (long long)s->n - 1);
    size_t plane = (size_t)s->h * s->w, per = plane * s->c;
    switch (s->kind) {
    case TD_SRC_BYTES: memcpy(dst, s->pixels + (size_t)i * per, per); return 0;
    case TD_SRC_CMNIST: {
        const td_source *b = s->base;
        int bh = b->h, bw = b->w, py = (s->h - bh) / 2, px = (s->w - bw) / 2;
        const uint8_t *d = b->pixels + (size_t)i * bh * bw;
        static const uint8_t black[3] = {0, 0, 0}, white[3] = {255, 255, 255};
        const uint8_t *bg = s->bg_task >= 0 ? td_palette[s->labels[s->bg_task * s->n + i]] : black;
        const uint8_t *fg = s->fg_task >= 0 ? td_palette[s->labels[s->fg_task * s->n + i]] : white;
        for (int c = 0; c < s->c; c++) {
            uint8_t *o = dst + c * plane;
            memset(o, bg[c], plane);
            for (int y = 0; y < bh; y++)
                for (int x = 0; x < bw; x++) {
                    unsigned v = d[y * bw + x];
                    o[(size_t)(y + py) * s->w + x + px] = (uint8_t)((v * fg[c] + (255 - v) * bg[c] + 127) / 255);
                }
        }
        return 0;
    }
    case TD_SRC_FILES: {
        int ih, iw, c;
        uint8_t *im = td_image_decode(s->paths[i], s->c, &ih, &iw, &c);
        if (!im) return -1;
        uint8_t *rs = im;
        if (ih != s->h || iw != s->w) {
            rs = malloc(per);
            if (!rs || td_resize_u8(im, ih, iw, c, rs, s->h, s->w)) {
                free(im);
                if (!rs) return td_fail_int("files: out of memory");
                free(rs);
                return -1;
            }
            free(im);
        }
        for (size_t p = 0; p < plane; p++) /* HWC -> CHW */
            for (int ch = 0; ch < s->c; ch++) dst[ch * plane + p] = rs[p * s->c + ch];
        free(rs);
        return 0;
    }
    }
    return td_fail_int("source: unknown kind");
}

static int check_ids(const td_source *s, const int64_t *idx, int64_t n) {
    for (int64_t b = 0; b < n; b++)
        if (idx[b] < 0 || idx[b] >= s->n)
            return td_fail_int("source %s: sample id %lld (batch position %lld) out of range 0..%lld", s->what,
                               (long long)idx[b], (long long)b, (long long)s->n - 1);
    return 0;
}

static int norm_params(const td_source *s, const float *mean, const float *std, float *scale, float *shift) {
    for (int c = 0; c < s->c; c++) {
        float m = mean ? mean[c] : 0, d = std ? std[c] : 1;
        if (!(d > 0)) return td_fail_int("normalize: std of channel %d must be > 0, got %g", c + 1, d);
        scale[c] = 1.0f / (255.0f * d);
        shift[c] = -m / d;
    }
    return 0;
}

/* Decoding n samples with a few threads that block rather than spin (the loader's worker runs
 * this while the caller's own OpenMP team trains): samples are handed out one at a time. Each
 * sample goes as bytes to u8 (n x per) or as floats to f32 with scale / shift per channel. */
typedef struct {
    const td_source *s;
    const int64_t *idx; /* source ids; NULL: first + k */
    int64_t first, n, next;
    uint8_t *u8;
    float *f32;
    const float *scale, *shift;
    int failed;
    char err[1024];
    pthread_mutex_t mu;
} decode_job;

static void *decode_worker(void *arg) {
    decode_job *j = arg;
    const td_source *s = j->s;
    size_t plane = (size_t)s->h * s->w, per = plane * s->c;
    uint8_t *tmp = j->u8 ? NULL : malloc(per);
    for (;;) {
        int64_t k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (k >= j->n || __atomic_load_n(&j->failed, __ATOMIC_RELAXED)) break;
        uint8_t *dst = j->u8 ? j->u8 + (size_t)k * per : tmp;
        int rc = dst ? td_source_sample_u8(s, j->idx ? j->idx[k] : j->first + k, dst) : td_fail_int("source: out of memory");
        if (rc) {
            pthread_mutex_lock(&j->mu);
            if (!j->failed) {
                snprintf(j->err, sizeof j->err, "%s", td_last_error());
                __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
            }
            pthread_mutex_unlock(&j->mu);
            break;
        }
        if (j->f32) {
            float *o = j->f32 + (size_t)k * per;
            for (int c = 0; c < s->c; c++)
                for (size_t q = 0; q < plane; q++) o[c * plane + q] = tmp[c * plane + q] * j->scale[c] + j->shift[c];
        }
    }
    free(tmp);
    return NULL;
}

static int decode_parallel(decode_job *j, int nthreads) {
    pthread_t th[16];
    int started = 0;
    if (nthreads > 16) nthreads = 16;
    if (nthreads > j->n) nthreads = j->n > 0 ? (int)j->n : 1;
    pthread_mutex_init(&j->mu, NULL);
    for (int t = 1; t < nthreads; t++)
        if (pthread_create(&th[started], NULL, decode_worker, j) == 0) started++;
    decode_worker(j);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    pthread_mutex_destroy(&j->mu);
    if (j->failed) return td_fail_int("%s", j->err);
    return 0;
}

int td_source_fill(const td_source *s, const int64_t *idx, int64_t n, float *out, int64_t *labels, const float *mean,
                   const float *std, int nthreads) {
    if (n < 0) return td_fail_int("source %s: negative batch size", s->what);
    if (check_ids(s, idx, n)) return -1;
    if (labels)
        for (int k = 0; k < s->ntasks; k++)
            for (int64_t b = 0; b < n; b++) labels[k * n + b] = s->labels[k * s->n + idx[b]];
    if (!out) return 0;
    float scale[4], shift[4];
    if (norm_params(s, mean, std, scale, shift)) return -1;
    size_t plane = (size_t)s->h * s->w, per = plane * s->c;
    if (s->kind == TD_SRC_BYTES) {
        for (int64_t b = 0; b < n; b++) {
            const uint8_t *p = s->pixels + (size_t)idx[b] * per;
            float *o = out + (size_t)b * per;
            for (int c = 0; c < s->c; c++) {
                const float a = scale[c], z = shift[c];
                for (size_t q = 0; q < plane; q++) o[c * plane + q] = p[c * plane + q] * a + z;
            }
        }
        return 0;
    }
    decode_job j = {.s = s, .idx = idx, .n = n, .f32 = out, .scale = scale, .shift = shift};
    return decode_parallel(&j, s->kind == TD_SRC_FILES ? nthreads : 1);
}

int td_source_stats(const td_source *s, const int64_t *idx, int64_t n, double *mean, double *std, int nthreads) {
    if (!idx) n = s->n;
    if (n < 1) return td_fail_int("stats: source %s: no samples", s->what);
    if (idx && check_ids(s, idx, n)) return -1;
    size_t plane = (size_t)s->h * s->w, per = plane * s->c;
    uint64_t(*hist)[256] = calloc((size_t)s->c, sizeof *hist);
    uint8_t *tmp = malloc(per);
    if (!hist || !tmp) {
        free(hist);
        free(tmp);
        return td_fail_int("stats: out of memory");
    }
    for (int64_t b = 0; b < n; b++) {
        int64_t i = idx ? idx[b] : b;
        const uint8_t *p;
        if (s->kind == TD_SRC_BYTES) p = s->pixels + (size_t)i * per;
        else {
            if (td_source_sample_u8(s, i, tmp)) {
                free(hist);
                free(tmp);
                return -1;
            }
            p = tmp;
        }
        for (int c = 0; c < s->c; c++) {
            uint64_t *h = hist[c];
            const uint8_t *q = p + c * plane;
            for (size_t k = 0; k < plane; k++) h[q[k]]++;
        }
    }
    double cnt = (double)n * plane;
    for (int c = 0; c < s->c; c++) {
        double s1 = 0, s2 = 0;
        for (int v = 0; v < 256; v++) {
            double x = v / 255.0;
            s1 += hist[c][v] * x;
            s2 += hist[c][v] * x * x;
        }
        double m = s1 / cnt, var = s2 / cnt - m * m;
        mean[c] = m;
        std[c] = var > 0 ? sqrt(var) : 0;
    }
    free(hist);
    free(tmp);
    return 0;
}

int td_source_check_labels(const td_source *s, int task, int64_t nclasses) {
    if (task < 0 || task >= s->ntasks)
        return td_fail_int("source %s: task %d out of range (it has %d)", s->what, task + 1, s->ntasks);
    const int64_t *l = s->labels + (int64_t)task * s->n;
    for (int64_t i = 0; i < s->n; i++)
        if (l[i] < 0 || l[i] >= nclasses)
            return td_fail_int("source %s: label %lld of sample %lld (task %d) is outside 0..%lld", s->what,
                               (long long)l[i], (long long)i, task + 1, (long long)nclasses - 1);
    return 0;
}

/* ---- the cache file --------------------------------------------------------------------------- */
static int entry(json_t *root, const char *name, const char *dtype, int ndim, const int64_t *shape, size_t off,
                 size_t len) {
    json_t *e = json_object(), *sh = json_array(), *of = json_array();
    if (!e || !sh || !of) return -1;
    for (int d = 0; d < ndim; d++) json_array_append_new(sh, json_integer(shape[d]));
    json_array_append_new(of, json_integer((json_int_t)off));
    json_array_append_new(of, json_integer((json_int_t)(off + len)));
    json_object_set_new(e, "dtype", json_string(dtype));
    json_object_set_new(e, "shape", sh);
    json_object_set_new(e, "data_offsets", of);
    return json_object_set_new(root, name, e);
}

int td_source_save(const td_source *s, const char *path, const td_kv *meta, int n_meta, int nthreads) {
    size_t per = (size_t)s->c * s->h * s->w, nl = (size_t)s->ntasks * (size_t)s->n;
    json_t *root = json_object(), *md = json_object();
    if (!root || !md) {
        json_decref(root);
        json_decref(md);
        return td_fail_int("cache: out of memory");
    }
    for (int i = 0; i < n_meta; i++) json_object_set_new(md, meta[i].key, json_string(meta[i].value));
    json_object_set_new(root, "__metadata__", md);
    int64_t lshape[2] = {s->ntasks, s->n}, ishape[4] = {s->n, s->c, s->h, s->w};
    entry(root, "labels", "I64", 2, lshape, 0, nl * 8);
    entry(root, "images", "U8", 4, ishape, nl * 8, (size_t)s->n * per);
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!hdr) return td_fail_int("cache: %s: cannot encode the header (metadata must be UTF-8)", path);
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    uint8_t *chunk = NULL;
    FILE *f = NULL;
    if (!tmp) goto oom;
    snprintf(tmp, plen + 32, "%s.tmp%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) {
        td_fail_int("cache: %s: cannot write: %s", tmp, strerror(errno));
        goto fail;
    }
    uint64_t hl64 = padded;
    int ok = fwrite(&hl64, 8, 1, f) == 1 && fwrite(hdr, 1, hl, f) == hl;
    for (size_t k = hl; k < padded && ok; k++) ok = fputc(' ', f) != EOF;
    if (ok && nl) ok = fwrite(s->labels, 8, nl, f) == nl;
    if (ok && s->kind == TD_SRC_BYTES) {
        if (s->n) ok = fwrite(s->pixels, per, (size_t)s->n, f) == (size_t)s->n;
    } else if (ok) {
        enum { CHUNK = 256 };
        chunk = malloc(per * CHUNK);
        if (!chunk) goto oom;
        for (int64_t i0 = 0; i0 < s->n && ok; i0 += CHUNK) {
            if (td_interrupted()) {
                td_fail_int("interrupted: writing %s stopped after %lld of %lld samples", path, (long long)i0,
                            (long long)s->n);
                goto fail;
            }
            int64_t m = s->n - i0 < CHUNK ? s->n - i0 : CHUNK;
            decode_job j = {.s = s, .first = i0, .n = m, .u8 = chunk};
            if (decode_parallel(&j, s->kind == TD_SRC_FILES ? nthreads : 1)) goto fail;
            ok = fwrite(chunk, per, (size_t)m, f) == (size_t)m;
        }
    }
    if (!ok) {
        td_fail_int("cache: %s: write failed: %s", tmp, strerror(errno ? errno : EIO));
        goto fail;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        td_fail_int("cache: %s: write failed: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fclose(f) != 0) {
        f = NULL;
        td_fail_int("cache: %s: write failed: %s", tmp, strerror(errno));
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        td_fail_int("cache: %s: cannot rename into place: %s", path, strerror(errno));
        goto fail;
    }
    free(tmp);
    free(chunk);
    free(hdr);
    return 0;
oom:
    td_fail_int("cache: out of memory");
fail:
    if (f) fclose(f);
    if (tmp) remove(tmp);
    free(tmp);
    free(chunk);
    free(hdr);
    return -1;
}

/* Reads dtype, shape and offsets of one entry; -1 with a message naming the file. */
static int get_entry(const char *path, json_t *root, const char *name, const char *dtype, int ndim, int64_t *shape,
                     size_t *off, size_t *end) {
    json_t *e = json_object_get(root, name);
    if (!json_is_object(e)) return td_fail_int("cache: %s: the header has no '%s' entry", path, name);
    json_t *dt = json_object_get(e, "dtype"), *sh = json_object_get(e, "shape"), *of = json_object_get(e, "data_offsets");
    if (!json_is_string(dt) || strcmp(json_string_value(dt), dtype) != 0)
        return td_fail_int("cache: %s: '%s' must have dtype %s", path, name, dtype);
    if (!json_is_array(sh) || (int)json_array_size(sh) != ndim)
        return td_fail_int("cache: %s: '%s' must have %d dimensions", path, name, ndim);
    for (int d = 0; d < ndim; d++) {
        json_t *v = json_array_get(sh, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return td_fail_int("cache: %s: '%s' has a bad size in dimension %d", path, name, d + 1);
        shape[d] = json_integer_value(v);
    }
    if (!json_is_array(of) || json_array_size(of) != 2 || !json_is_integer(json_array_get(of, 0)) ||
        !json_is_integer(json_array_get(of, 1)))
        return td_fail_int("cache: %s: '%s' has bad data_offsets", path, name);
    json_int_t a = json_integer_value(json_array_get(of, 0)), b = json_integer_value(json_array_get(of, 1));
    if (a < 0 || b < a) return td_fail_int("cache: %s: '%s' has bad data_offsets [%lld, %lld]", path, name, (long long)a, (long long)b);
    *off = (size_t)a;
    *end = (size_t)b;
    return 0;
}

td_source *td_source_open(const char *path, td_kv **meta, int *n_meta) {
    if (meta) {
        *meta = NULL;
        *n_meta = 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return td_fail("cache: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return td_fail("cache: %s: not a regular file", path);
    }
    size_t fsize = (size_t)st.st_size;
    uint64_t hl = 0;
    if (fsize < 8 || pread(fd, &hl, 8, 0) != 8) {
        close(fd);
        return td_fail("cache: %s: truncated at byte offset %zu: the header length needs 8 bytes", path, fsize);
    }
    if (hl > fsize - 8 || hl > ((uint64_t)1 << 26)) {
        close(fd);
        return td_fail("cache: %s: header length %llu at byte offset 0 does not fit the file of %zu bytes", path,
                       (unsigned long long)hl, fsize);
    }
    char *hdr = malloc(hl + 1);
    if (!hdr || pread(fd, hdr, hl, 8) != (ssize_t)hl) {
        free(hdr);
        close(fd);
        return td_fail("cache: %s: cannot read the header", path);
    }
    json_error_t je;
    json_t *root = json_loadb(hdr, hl, 0, &je);
    free(hdr);
    if (!json_is_object(root)) {
        json_decref(root);
        close(fd);
        return td_fail("cache: %s: the header (byte offsets 8..%llu) is not a JSON object: byte %d: %s", path,
                       (unsigned long long)(8 + hl - 1), je.position, je.text);
    }
    size_t lo = 0, le = 0, io = 0, ie = 0, data0 = 8 + hl, dlen = fsize - data0;
    int64_t ls[2] = {0, 0}, is[4] = {0, 0, 0, 0};
    td_source *s = NULL;
    int64_t *labels = NULL;
    if (get_entry(path, root, "labels", "I64", 2, ls, &lo, &le) || get_entry(path, root, "images", "U8", 4, is, &io, &ie))
        goto fail;
    /* sizes checked before the casts to int and in checked products: a sample count of 2^62
     * with 4 bytes a sample "is" 0 bytes in wrapping arithmetic, and get() then read anywhere */
    for (int d = 1; d < 4; d++)
        if (is[d] > 65535) {
            td_fail("cache: %s: 'images' has size %lld in dimension %d (at most 65535)", path, (long long)is[d], d + 1);
            goto fail;
        }
    if (ls[0] > TD_SRC_MAX_TASKS) {
        td_fail("cache: %s: 'labels' has %lld tasks (at most %d)", path, (long long)ls[0], TD_SRC_MAX_TASKS);
        goto fail;
    }
    char what[4200];
    snprintf(what, sizeof what, "cache: %s", path);
    if (check_dims(what, is[0], (int)is[1], (int)is[2], (int)is[3], (int)ls[0])) goto fail;
    int64_t nlab = td_shape_numel(2, ls, TD_MAX_NUMEL), npix = td_shape_numel(4, is, TD_MAX_NUMEL);
    if (ls[1] != is[0] || nlab < 0 || npix < 0 || le - lo != (size_t)nlab * 8 || ie - io != (size_t)npix ||
        le > dlen || ie > dlen) {
        td_fail("cache: %s: sizes disagree: labels %lldx%lld at [%zu, %zu), images %lldx%lldx%lldx%lld at [%zu, %zu), "
                "%zu data bytes after byte offset %zu",
                path, (long long)ls[0], (long long)ls[1], lo, le, (long long)is[0], (long long)is[1], (long long)is[2],
                (long long)is[3], io, ie, dlen, data0);
        goto fail;
    }
    labels = malloc(le - lo + 8);
    if (!labels) {
        td_fail("cache: out of memory");
        goto fail;
    }
    if (le > lo && pread(fd, labels, le - lo, (off_t)(data0 + lo)) != (ssize_t)(le - lo)) {
        td_fail("cache: %s: cannot read the labels at byte offset %zu", path, data0 + lo);
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (!s || !(s->what = dupstr(path))) {
        td_fail("cache: out of memory");
        goto fail;
    }
    s->refcount = 1;
    s->kind = TD_SRC_BYTES;
    s->n = is[0];
    s->c = (int)is[1];
    s->h = (int)is[2];
    s->w = (int)is[3];
    s->ntasks = (int)ls[0];
    s->labels = labels;
    labels = NULL;
    void *map = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        td_fail("cache: %s: cannot map %zu bytes: %s", path, fsize, strerror(errno));
        goto fail;
    }
    s->map = map;
    s->map_len = fsize;
    s->pixels = (uint8_t *)map + data0 + io;
    if (meta) {
        json_t *md = json_object_get(root, "__metadata__");
        size_t nm = json_is_object(md) ? json_object_size(md) : 0;
        td_kv *kv = calloc(nm + 1, sizeof *kv);
        int k = 0;
        const char *key;
        json_t *v;
        if (!kv) {
            td_fail("cache: out of memory");
            goto fail;
        }
        if (nm)
            json_object_foreach(md, key, v) {
                if (!json_is_string(v)) continue;
                kv[k].key = dupstr(key);
                kv[k].value = dupstr(json_string_value(v));
                k++;
            }
        *meta = kv;
        *n_meta = k;
    }
    json_decref(root);
    close(fd);
    return s;
fail:
    free(labels);
    td_source_release(s);
    json_decref(root);
    close(fd);
    return NULL;
}

/* ---- the loader ----------------------------------------------------------------------------- */
enum { JOB_IDLE, JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct td_loader {
    td_source *src;
    int64_t n, batch, nbatches;
    int64_t *index; /* position -> source id */
    int64_t *order; /* the epoch's source ids, in batch order */
    float mean[4], std[4];
    int nthreads;
    int64_t next; /* next batch to hand out */
    bool prefetch;
    /* the job slot shared with the worker */
    pthread_t th;
    bool started, quit;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;    /* shared with the worker: read and written under mu */
    bool pending; /* the caller's side: a batch was submitted and not yet collected */
    int64_t job_batch;
    td_tensor *jx, *jy[TD_SRC_MAX_TASKS];
    int job_rc;
    char job_err[1024];
};

static int64_t batch_len(const td_loader *l, int64_t b) {
    int64_t rest = l->n - b * l->batch;
    return rest < l->batch ? rest : l->batch;
}

/* Fills the job's tensors (any thread). */
static void run_job(td_loader *l) {
    int64_t b = l->job_batch, m = batch_len(l, b);
    const td_source *s = l->src;
    int64_t *lab = malloc(sizeof(int64_t) * (size_t)(s->ntasks * m + 1));
    int rc = lab ? td_source_fill(s, l->order + b * l->batch, m, td_f32(l->jx), lab, l->mean, l->std, l->nthreads)
                 : td_fail_int("loader: out of memory");
    if (rc == 0)
        for (int k = 0; k < s->ntasks; k++) memcpy(td_i64(l->jy[k]), lab + k * m, sizeof(int64_t) * (size_t)m);
    free(lab);
    l->job_rc = rc;
    if (rc) snprintf(l->job_err, sizeof l->job_err, "%s", td_last_error());
}

static void *worker(void *arg) {
    td_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && l->state != JOB_QUEUED) pthread_cond_wait(&l->cv, &l->mu);
        if (l->quit) break;
        l->state = JOB_RUNNING;
        pthread_mutex_unlock(&l->mu);
        run_job(l);
        pthread_mutex_lock(&l->mu);
        l->state = JOB_DONE;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void drop_job_tensors(td_loader *l) {
    td_release(l->jx);
    l->jx = NULL;
    for (int k = 0; k < l->src->ntasks; k++) {
        td_release(l->jy[k]);
        l->jy[k] = NULL;
    }
}

/* Allocates batch b's tensors on this thread and queues it (or runs it here). */
static int submit(td_loader *l, int64_t b) {
    const td_source *s = l->src;
    int64_t m = batch_len(l, b), xs[4] = {m, s->c, s->h, s->w};
    l->jx = td_empty(TD_F32, 4, xs);
    if (!l->jx) return -1;
    for (int k = 0; k < s->ntasks; k++)
        if (!(l->jy[k] = td_empty(TD_I64, 1, &m))) {
            drop_job_tensors(l);
            return -1;
        }
    l->job_batch = b;
    l->pending = true;
    if (!l->started) {
        run_job(l);
        return 0;
    }
    pthread_mutex_lock(&l->mu);
    l->state = JOB_QUEUED;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* The worker lives only while an epoch has batches left, so that loaders kept around (or
 * waiting for the collector) hold no thread. */
static void start_worker(td_loader *l) {
    if (!l->prefetch || l->started) return;
    l->quit = false;
    if (pthread_create(&l->th, NULL, worker, l) == 0) l->started = true;
}

static void stop_worker(td_loader *l) {
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    l->quit = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->th, NULL);
    l->started = false;
    l->quit = false;
    if (l->state == JOB_QUEUED) { /* never picked up */
        drop_job_tensors(l);
        l->pending = false;
    }
    l->state = JOB_IDLE;
}

static void wait_done(td_loader *l) {
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    while (l->state == JOB_QUEUED || l->state == JOB_RUNNING) pthread_cond_wait(&l->cv, &l->mu);
    l->state = JOB_IDLE;
    pthread_mutex_unlock(&l->mu);
}

td_loader *td_loader_new(td_source *s, const int64_t *index, int64_t n, int64_t batch, bool drop_last,
                         const float *mean, const float *std, bool prefetch, int nthreads) {
    if (batch < 1) return td_fail("loader: batch size must be >= 1, got %lld", (long long)batch);
    if (n < 0) return td_fail("loader: negative number of samples");
    if (index && check_ids(s, index, n)) return NULL;
    float sc[4], sh[4];
    if (norm_params(s, mean, std, sc, sh)) return NULL;
    td_loader *l = calloc(1, sizeof *l);
    if (!l) return td_fail("loader: out of memory");
    l->index = malloc(sizeof(int64_t) * (size_t)(n + 1));
    l->order = malloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!l->index || !l->order) {
        free(l->index);
        free(l->order);
        free(l);
        return td_fail("loader: out of memory");
    }
    for (int64_t i = 0; i < n; i++) l->index[i] = index ? index[i] : i;
    memcpy(l->order, l->index, sizeof(int64_t) * (size_t)n);
    l->src = s;
    td_source_retain(s);
    l->n = n;
    l->batch = batch;
    l->nbatches = drop_last ? n / batch : (n + batch - 1) / batch;
    for (int c = 0; c < s->c; c++) {
        l->mean[c] = mean ? mean[c] : 0;
        l->std[c] = std ? std[c] : 1;
    }
    l->nthreads = nthreads < 1 ? 1 : nthreads;
    l->prefetch = prefetch;
    l->next = l->nbatches; /* nothing until started */
    l->state = JOB_IDLE;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    return l;
}

int64_t td_loader_num_batches(const td_loader *l) { return l->nbatches; }

int td_loader_start(td_loader *l, const int64_t *perm, int64_t n_perm) {
    if (perm && n_perm != l->n)
        return td_fail_int("loader: the order has %lld entries for a data set of %lld samples", (long long)n_perm,
                           (long long)l->n);
    if (perm) {
        /* a permutation of 0..n-1: checked so that a wrong one cannot read out of range */
        uint8_t *seen = calloc((size_t)l->n + 1, 1);
        if (!seen) return td_fail_int("loader: out of memory");
        for (int64_t i = 0; i < l->n; i++) {
            if (perm[i] < 0 || perm[i] >= l->n || seen[perm[i]]) {
                free(seen);
                return td_fail_int("loader: the order is not a permutation of 0..%lld (position %lld holds %lld)",
                                   (long long)l->n - 1, (long long)i, (long long)perm[i]);
            }
            seen[perm[i]] = 1;
        }
        free(seen);
    }
    wait_done(l);
    drop_job_tensors(l);
    l->pending = false;
    for (int64_t i = 0; i < l->n; i++) l->order[i] = l->index[perm ? perm[i] : i];
    l->next = 0;
    if (l->nbatches == 0) {
        stop_worker(l);
        return 0;
    }
    start_worker(l); /* without a thread (prefetch off, or none to be had) batches run here */
    if (l->started) return submit(l, 0); /* the first batch decodes right away */
    return 0;
}

int td_loader_next(td_loader *l, td_tensor **x, td_tensor **labels) {
    *x = NULL;
    if (l->next >= l->nbatches) {
        stop_worker(l);
        return 0;
    }
    if (!l->pending && submit(l, l->next)) return -1;
    wait_done(l);
    int rc = l->job_rc;
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", l->job_err);
        drop_job_tensors(l);
        l->pending = false;
        l->next = l->nbatches; /* the epoch ends at an error */
        stop_worker(l);
        return td_fail_int("%s", msg);
    }
    *x = l->jx;
    l->jx = NULL;
    for (int k = 0; k < l->src->ntasks; k++) {
        labels[k] = l->jy[k];
        l->jy[k] = NULL;
    }
    l->pending = false;
    l->next++;
    if (l->next >= l->nbatches) stop_worker(l); /* nothing left to prefetch */
    if (l->started && l->next < l->nbatches && submit(l, l->next)) {
        td_release(*x);
        for (int k = 0; k < l->src->ntasks; k++) td_release(labels[k]);
        *x = NULL;
        return -1;
    }
    return 1;
}

void td_loader_free(td_loader *l) {
    if (!l) return;
    stop_worker(l);
    drop_job_tensors(l);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    td_source_release(l->src);
    free(l->index);
    free(l->order);
    free(l);
}

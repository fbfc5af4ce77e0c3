/* safetensors reader and writer.
 *
 * Layout: 8-byte little-endian u64 N, N bytes of JSON header, then the data section.
 *   {"name": {"dtype": "F32", "shape": [3, 4], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * Offsets are relative to the start of the data section.
 *
 * Writer: F32 / I64 tensors in the order given, packed back to back (the reference
 * implementation refuses holes), header padded with spaces so the data section starts at a
 * multiple of 8; written to PATH.tmp.<pid>, flushed, fsync'd and renamed over PATH.
 * Reader: F32 and I64 natively; F64 / F16 / BF16 become float32 and I32 / I16 / I8 / U8 /
 * U16 / U32 / BOOL become int64. The whole header is validated before any tensor data is
 * allocated; every message names the file and the tensor or byte offset concerned.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"
#include "../tensor.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ST_HOST_BE 1
#else
#define ST_HOST_BE 0
#endif

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* same cap as the reference reader */

/* ---- source dtypes ------------------------------------------------------------------------ */
typedef struct {
    const char *name;
    char kind; /* 'f' IEEE float, 'h' half, 'g' bfloat16, 'i' signed, 'u' unsigned, 'b' bool */
    int size;
    td_dtype to;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 'f', 4, TD_F32}, {"I64", 'i', 8, TD_I64}, {"F64", 'f', 8, TD_F32},
    {"F16", 'h', 2, TD_F32}, {"BF16", 'g', 2, TD_F32}, {"I32", 'i', 4, TD_I64},
    {"I16", 'i', 2, TD_I64}, {"I8", 'i', 1, TD_I64},   {"U8", 'u', 1, TD_I64},
    {"U16", 'u', 2, TD_I64}, {"U32", 'u', 4, TD_I64},  {"BOOL", 'b', 1, TD_I64},
};

static const st_dtype *st_find_dtype(const char *s) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, s) == 0) return &st_dtypes[i];
    return NULL;
}

/* Converts n little-endian elements of `sd` at src into dst (float or int64). */
static void st_convert(void *dst, const unsigned char *src, int64_t n, const st_dtype *sd) {
    if (!ST_HOST_BE && ((sd->kind == 'f' && sd->size == 4) || (sd->kind == 'i' && sd->size == 8))) {
        memcpy(dst, src, (size_t)n * (size_t)sd->size);
        return;
    }
    float *df = dst;
    int64_t *di = dst;
    for (int64_t k = 0; k < n; k++, src += sd->size) {
        unsigned char b[8];
        for (int j = 0; j < sd->size; j++) b[j] = src[ST_HOST_BE ? sd->size - 1 - j : j];
        td_convert_elem(sd->kind, sd->size, b, df, di, k);
    }
}

/* ---- freeing -------------------------------------------------------------------------------- */
void td_named_free(td_named *ts, int n) {
    if (!ts) return;
    for (int i = 0; i < n; i++) {
        free(ts[i].name);
        td_release(ts[i].t);
    }
    free(ts);
}

void td_kv_free(td_kv *kv, int n) {
    if (!kv) return;
    for (int i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

/* ---- parsing -------------------------------------------------------------------------------- */
typedef struct {
    const char *name;
    const st_dtype *dt;
    int ndim;
    int64_t shape[TD_MAX_DIMS];
    int64_t numel;
    int64_t begin, end;
} st_entry;

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* Validates one tensor entry of the header; 0 or -1 (error set). */
static int st_check_entry(const char *what, const char *name, json_t *v, size_t data_len,
                          size_t data_start, st_entry *e) {
    if (!json_is_object(v))
        return td_fail_int("safetensors: %s: tensor '%s': entry is not a JSON object (header at byte offset 8)",
                           what, name);
    e->name = name;
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return td_fail_int("safetensors: %s: tensor '%s': missing or non-string 'dtype' (header at byte offset 8)",
                           what, name);
    e->dt = st_find_dtype(json_string_value(dt));
    if (!e->dt)
        return td_fail_int("safetensors: %s: tensor '%s': unsupported dtype '%.32s' (header at byte offset 8)",
                           what, name, json_string_value(dt));
    json_t *sh = json_object_get(v, "shape");
    if (!json_is_array(sh))
        return td_fail_int("safetensors: %s: tensor '%s': missing or non-array 'shape' (header at byte offset 8)",
                           what, name);
    size_t nd = json_array_size(sh);
    if (nd > TD_MAX_DIMS)
        return td_fail_int("safetensors: %s: tensor '%s': shape has %zu dims, at most %d are supported",
                           what, name, nd, TD_MAX_DIMS);
    e->ndim = (int)nd;
    /* Bound the product of the non-zero sizes so no later stride or byte count overflows. */
    const int64_t limit = INT64_MAX / 8;
    int64_t prod = 1;
    bool zero = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return td_fail_int("safetensors: %s: tensor '%s': shape[%zu] is not a non-negative integer",
                               what, name, i);
        int64_t s = json_integer_value(d);
        e->shape[i] = s;
        if (s == 0) { zero = true; continue; }
        if (prod > limit / s)
            return td_fail_int("safetensors: %s: tensor '%s': element count of the shape overflows",
                               what, name);
        prod *= s;
    }
    e->numel = zero ? 0 : prod;
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return td_fail_int("safetensors: %s: tensor '%s': 'data_offsets' must be an array of 2 integers",
                           what, name);
    e->begin = json_integer_value(json_array_get(off, 0));
    e->end = json_integer_value(json_array_get(off, 1));
    if (e->begin < 0 || e->end < e->begin || (uint64_t)e->end > data_len)
        return td_fail_int("safetensors: %s: tensor '%s' data_offsets [%lld, %lld] out of range "
                           "(data section is %zu bytes, at byte offset %zu)",
                           what, name, (long long)e->begin, (long long)e->end, data_len, data_start);
    int64_t need = e->numel * e->dt->size;
    if (e->end - e->begin != need) {
        char sbuf[TD_SHAPE_BUF];
        td_dims_str(e->ndim, e->shape, sbuf, sizeof sbuf);
        return td_fail_int("safetensors: %s: tensor '%s' data_offsets [%lld, %lld] hold %lld bytes but "
                           "%s shape [%s] needs %lld (at byte offset %zu)",
                           what, name, (long long)e->begin, (long long)e->end,
                           (long long)(e->end - e->begin), e->dt->name, sbuf, (long long)need,
                           data_start + (size_t)e->begin);
    }
    return 0;
}

int td_safetensors_parse(const void *buf, size_t len, const char *what, td_named **ts_out, int *n_out,
                         td_kv **meta_out, int *n_meta_out) {
    if (!what) what = "<buffer>";
    if (!ts_out || !n_out) return td_fail_int("safetensors: %s: no output arguments", what);
    *ts_out = NULL;
    *n_out = 0;
    if (meta_out) *meta_out = NULL;
    if (n_meta_out) *n_meta_out = 0;
    if (!buf && len) return td_fail_int("safetensors: %s: no buffer", what);
    const unsigned char *b = buf;
    if (len < 8)
        return td_fail_int("safetensors: %s: file is %zu bytes, too short for the 8-byte header length "
                           "(at byte offset 0)", what, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    if (hlen > len - 8)
        return td_fail_int("safetensors: %s: header length %llu is larger than the file "
                           "(%zu bytes after the length field, at byte offset 0)",
                           what, (unsigned long long)hlen, len - 8);
    if (hlen > ST_MAX_HEADER)
        return td_fail_int("safetensors: %s: header length %llu exceeds the %llu-byte limit (at byte offset 0)",
                           what, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    size_t data_start = 8 + (size_t)hlen, data_len = len - data_start;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)b + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return td_fail_int("safetensors: %s: invalid JSON header at byte offset %zu: %s", what,
                           8 + (jerr.position > 0 ? (size_t)jerr.position : 0), jerr.text);
    int rc = -1;
    st_entry *ents = NULL;
    td_named *ts = NULL;
    td_kv *kv = NULL;
    int nt = 0, nkv = 0;
    if (!json_is_object(root)) {
        td_fail("safetensors: %s: header is not a JSON object (at byte offset 8)", what);
        goto done;
    }

    /* Pass 1: validate everything. */
    size_t nkeys = json_object_size(root);
    if (nkeys > (size_t)INT32_MAX) { td_fail("safetensors: %s: too many entries", what); goto done; }
    ents = malloc((nkeys ? nkeys : 1) * sizeof *ents);
    if (!ents) { td_fail("safetensors: %s: out of memory", what); goto done; }
    json_t *metaobj = NULL;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                td_fail("safetensors: %s: '__metadata__' is not a JSON object (header at byte offset 8)", what);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    td_fail("safetensors: %s: '__metadata__' value of '%s' is not a string "
                            "(header at byte offset 8)", what, mk);
                    goto done;
                }
            }
            metaobj = val;
            continue;
        }
        if (st_check_entry(what, key, val, data_len, data_start, &ents[nt]) != 0) goto done;
        nt++;
    }

    /* Pass 2: allocate and fill. */
    if (nt > 0) {
        ts = calloc((size_t)nt, sizeof *ts);
        if (!ts) { td_fail("safetensors: %s: out of memory", what); goto done; }
    }
    for (int i = 0; i < nt; i++) {
        st_entry *e = &ents[i];
        ts[i].name = st_strdup(e->name);
        if (!ts[i].name) { td_fail("safetensors: %s: out of memory", what); goto done; }
        ts[i].t = td_empty(e->dt->to, e->ndim, e->shape);
        if (!ts[i].t) {
            char why[256];
            snprintf(why, sizeof why, "%s", td_last_error());
            td_fail("safetensors: %s: tensor '%s': %s", what, e->name, why);
            goto done;
        }
        if (e->numel > 0) {
            void *dst = e->dt->to == TD_F32 ? (void *)td_f32(ts[i].t) : (void *)td_i64(ts[i].t);
            st_convert(dst, b + data_start + e->begin, e->numel, e->dt);
        }
    }
    if (metaobj && meta_out) {
        size_t nm = json_object_size(metaobj);
        kv = calloc(nm ? nm : 1, sizeof *kv);
        if (!kv) { td_fail("safetensors: %s: out of memory", what); goto done; }
        const char *mk;
        json_t *mv;
        json_object_foreach(metaobj, mk, mv) {
            kv[nkv].key = st_strdup(mk);
            kv[nkv].value = st_strdup(json_string_value(mv));
            nkv++;
            if (!kv[nkv - 1].key || !kv[nkv - 1].value) {
                td_fail("safetensors: %s: out of memory", what);
                goto done;
            }
        }
    }
    rc = 0;
done:
    free(ents);
    json_decref(root);
    if (rc != 0) {
        td_named_free(ts, nt);
        td_kv_free(kv, nkv);
        return -1;
    }
    *ts_out = ts;
    *n_out = nt;
    if (meta_out) *meta_out = kv;
    else td_kv_free(kv, nkv);
    if (n_meta_out) *n_meta_out = meta_out ? nkv : 0;
    return 0;
}

int td_safetensors_load(const char *path, td_named **ts, int *n, td_kv **meta, int *n_meta) {
    if (ts) *ts = NULL;
    if (n) *n = 0;
    if (meta) *meta = NULL;
    if (n_meta) *n_meta = 0;
    if (!path) return td_fail_int("safetensors: no path given");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return td_fail_int("safetensors: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return td_fail_int("safetensors: %s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return td_fail_int("safetensors: %s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    if (len == 0) {
        close(fd);
        return td_safetensors_parse("", 0, path, ts, n, meta, n_meta);
    }
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return td_fail_int("safetensors: %s: cannot map: %s", path, strerror(e));
    int rc = td_safetensors_parse(m, len, path, ts, n, meta, n_meta);
    munmap(m, len);
    return rc;
}

/* ---- writing -------------------------------------------------------------------------------- */
static int st_write_all(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1; }

#if ST_HOST_BE
static int st_write_le(FILE *f, const void *p, size_t n, size_t esize) {
    const unsigned char *c = p;
    unsigned char tmp[8];
    for (size_t i = 0; i < n; i += esize) {
        for (size_t j = 0; j < esize; j++) tmp[j] = c[i + esize - 1 - j];
        if (fwrite(tmp, 1, esize, f) != esize) return -1;
    }
    return 0;
}
#else
static int st_write_le(FILE *f, const void *p, size_t n, size_t esize) { (void)esize; return st_write_all(f, p, n); }
#endif

int td_safetensors_save(const char *path, const td_named *ts, int n, const td_kv *meta, int n_meta) {
    if (!path) return td_fail_int("safetensors: no path given");
    if (n < 0 || n_meta < 0 || (n > 0 && !ts) || (n_meta > 0 && !meta))
        return td_fail_int("safetensors: %s: bad tensor or metadata list", path);
    /* Check the arguments before touching the file. */
    for (int i = 0; i < n; i++) {
        if (!ts[i].name) return td_fail_int("safetensors: %s: tensor %d has no name", path, i + 1);
        if (!ts[i].t) return td_fail_int("safetensors: %s: tensor '%s' is NULL", path, ts[i].name);
        if (strcmp(ts[i].name, "__metadata__") == 0)
            return td_fail_int("safetensors: %s: '__metadata__' is reserved and cannot name a tensor", path);
        if (ts[i].t->dtype != TD_F32 && ts[i].t->dtype != TD_I64)
            return td_fail_int("safetensors: %s: tensor '%s' has an unsupported dtype", path, ts[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(ts[i].name, ts[j].name) == 0)
                return td_fail_int("safetensors: %s: duplicate tensor name '%s'", path, ts[i].name);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value)
            return td_fail_int("safetensors: %s: metadata entry %d has no key or value", path, i + 1);
        for (int j = 0; j < i; j++)
            if (strcmp(meta[i].key, meta[j].key) == 0)
                return td_fail_int("safetensors: %s: duplicate metadata key '%s'", path, meta[i].key);
    }

    int rc = -1;
    char *hdr = NULL, *tmp = NULL;
    FILE *f = NULL;
    json_t *root = json_object();
    if (!root) return td_fail_int("safetensors: %s: out of memory", path);
    if (n_meta > 0) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, "__metadata__", m) != 0) {
            td_fail("safetensors: %s: out of memory", path);
            goto done;
        }
        for (int i = 0; i < n_meta; i++) {
            json_t *s = json_string(meta[i].value);
            if (!s) {
                td_fail("safetensors: %s: metadata value of '%s' is not valid UTF-8", path, meta[i].key);
                goto done;
            }
            if (json_object_set_new(m, meta[i].key, s) != 0) {
                td_fail("safetensors: %s: metadata key '%s' is not valid UTF-8", path, meta[i].key);
                goto done;
            }
        }
    }
    int64_t pos = 0;
    for (int i = 0; i < n; i++) {
        const td_tensor *t = ts[i].t;
        int64_t nb = td_numel(t) * (int64_t)td_dtype_size(t->dtype);
        json_t *e = json_object(), *shape = json_array();
        if (!e || !shape) {
            json_decref(e);
            json_decref(shape);
            td_fail("safetensors: %s: out of memory", path);
            goto done;
        }
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(e, "dtype", json_string(t->dtype == TD_F32 ? "F32" : "I64"));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)pos, (json_int_t)(pos + nb)));
        if (json_object_set_new(root, ts[i].name, e) != 0) {
            td_fail("safetensors: %s: tensor name '%s' is not valid UTF-8", path, ts[i].name);
            goto done;
        }
        pos += nb;
    }
    hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr) { td_fail("safetensors: %s: cannot encode the header", path); goto done; }
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;

    size_t tl = strlen(path) + 40;
    tmp = malloc(tl);
    if (!tmp) { td_fail("safetensors: %s: out of memory", path); goto done; }
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    td_remove_stale_tmp(path);
    f = fopen(tmp, "wb");
    if (!f) { td_fail("safetensors: %s: cannot create %s: %s", path, tmp, strerror(errno)); goto done; }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    int werr = st_write_all(f, lenb, 8) || st_write_all(f, hdr, hl) || st_write_all(f, spaces, padded - hl);
    bool prev = td_set_grad_enabled(false);
    for (int i = 0; i < n && !werr; i++) {
        td_tensor *t = ts[i].t;
        int64_t ne = td_numel(t);
        if (ne == 0) continue;
        td_tensor *c = td_contiguous(t);
        if (!c) {
            td_set_grad_enabled(prev);
            fclose(f);
            f = NULL;
            unlink(tmp);
            goto done; /* message from td_contiguous */
        }
        size_t es = td_dtype_size(c->dtype);
        const void *p = c->dtype == TD_F32 ? (const void *)td_f32(c) : (const void *)td_i64(c);
        werr = st_write_le(f, p, (size_t)ne * es, es);
        td_release(c);
    }
    td_set_grad_enabled(prev);
    if (!werr) werr = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !werr) { werr = 1; e = errno; }
    f = NULL;
    if (werr) {
        unlink(tmp);
        td_fail("safetensors: %s: write failed: %s", path, strerror(e));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        td_fail("safetensors: %s: cannot rename %s into place: %s", path, tmp, strerror(e));
        goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    free(tmp);
    free(hdr);
    json_decref(root);
    return rc;
}

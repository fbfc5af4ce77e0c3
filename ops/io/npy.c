/* NumPy .npy reader and writer.
 *
 * Layout: "\x93NUMPY", major, minor, header length (u16 LE for 1.0, u32 LE for 2.0 / 3.0),
 * then a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * padded with spaces and ended by '\n', then the raw array.
 *
 * Writer: version 1.0, float32 as '<f4' and int64 as '<i8', data starting at a multiple of
 * 64 bytes, written to PATH.tmp.<pid> and renamed into place.
 * Reader: versions 1.0 / 2.0 / 3.0; f2 / f4 / f8 -> float32; i1 / i2 / i4 / i8 / u1 / u2 /
 * u4 / b1 -> int64; either byte order; fortran_order True (reordered to row-major). Every
 * message names the file and a byte offset.
 */
#include <errno.h>
#include <fcntl.h>
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
#define NPY_HOST_BE 1
#else
#define NPY_HOST_BE 0
#endif

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

typedef struct {
    char kind; /* 'f' float, 'i' signed, 'u' unsigned, 'b' bool */
    int size;
    bool swap; /* bytes stored in the other order than the host's */
    td_dtype to;
} npy_type;

/* Converts one element at src into dst[k] (float or int64 array). */
static inline void npy_conv1(void *dst, int64_t k, const unsigned char *src, const npy_type *ty) {
    unsigned char b[8];
    for (int j = 0; j < ty->size; j++) b[j] = src[ty->swap ? ty->size - 1 - j : j];
    td_convert_elem(ty->kind, ty->size, b, dst, dst, k);
}

/* ---- header dict parser ----------------------------------------------------------------- */
typedef struct {
    const char *s;   /* header text */
    size_t n, i;     /* length, cursor */
    size_t base;     /* byte offset of s in the file */
    const char *what;
} npy_p;

static void npy_ws(npy_p *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int npy_bad(npy_p *p, const char *msg) {
    return td_fail_int("npy: %s: bad header at byte offset %zu: %s", p->what, p->base + p->i, msg);
}

static int npy_expect(npy_p *p, char c) {
    npy_ws(p);
    if (p->i >= p->n || p->s[p->i] != c) {
        char msg[32];
        snprintf(msg, sizeof msg, "expected '%c'", c);
        return npy_bad(p, msg);
    }
    p->i++;
    return 0;
}

/* A quoted Python string without escapes into out (NUL-terminated, at most cap-1 chars). */
static int npy_string(npy_p *p, char *out, size_t cap) {
    npy_ws(p);
    if (p->i >= p->n || (p->s[p->i] != '\'' && p->s[p->i] != '"')) return npy_bad(p, "expected a string");
    char q = p->s[p->i++];
    size_t k = 0;
    while (p->i < p->n && p->s[p->i] != q) {
        if (p->s[p->i] == '\\' || p->s[p->i] == '\n') return npy_bad(p, "unsupported character in string");
        if (k + 1 >= cap) return npy_bad(p, "string too long");
        out[k++] = p->s[p->i++];
    }
    if (p->i >= p->n) return npy_bad(p, "unterminated string");
    p->i++;
    out[k] = 0;
    return 0;
}

static int npy_word(npy_p *p, const char *w) {
    size_t l = strlen(w);
    if (p->n - p->i >= l && memcmp(p->s + p->i, w, l) == 0) {
        p->i += l;
        return 1;
    }
    return 0;
}

static int npy_shape(npy_p *p, int *ndim, int64_t *shape) {
    if (npy_expect(p, '(') != 0) return -1;
    int nd = 0;
    for (;;) {
        npy_ws(p);
        if (p->i < p->n && p->s[p->i] == ')') { p->i++; break; }
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
            return npy_bad(p, "expected a non-negative integer in the shape");
        int64_t v = 0;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
            int dgt = p->s[p->i] - '0';
            if (v > (INT64_MAX - dgt) / 10) return npy_bad(p, "shape value too large");
            v = v * 10 + dgt;
            p->i++;
        }
        if (p->i < p->n && (p->s[p->i] == 'L' || p->s[p->i] == 'l')) p->i++; /* Python 2 long */
        if (nd >= TD_MAX_DIMS) {
            char msg[64];
            snprintf(msg, sizeof msg, "shape has more than %d dims", TD_MAX_DIMS);
            return npy_bad(p, msg);
        }
        shape[nd++] = v;
        npy_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == ')') { p->i++; break; }
        return npy_bad(p, "expected ',' or ')' in the shape");
    }
    *ndim = nd;
    return 0;
}

static int npy_descr(npy_p *p, const char *d, npy_type *ty) {
    size_t l = strlen(d);
    char order = d[0];
    if (l < 3 || (order != '<' && order != '>' && order != '|' && order != '='))
        goto unsupported;
    ty->kind = d[1];
    if (d[2] < '1' || d[2] > '8' || l != 3) goto unsupported;
    ty->size = d[2] - '0';
    switch (ty->kind) {
    case 'f': if (ty->size != 2 && ty->size != 4 && ty->size != 8) goto unsupported; ty->to = TD_F32; break;
    case 'i': if (ty->size != 1 && ty->size != 2 && ty->size != 4 && ty->size != 8) goto unsupported; ty->to = TD_I64; break;
    case 'u': if (ty->size != 1 && ty->size != 2 && ty->size != 4) goto unsupported; ty->to = TD_I64; break;
    case 'b': if (ty->size != 1) goto unsupported; ty->to = TD_I64; break;
    default: goto unsupported;
    }
    if (order == '|' && ty->size != 1) goto unsupported;
    bool be = order == '>' || (order == '=' && NPY_HOST_BE);
    ty->swap = ty->size > 1 && be != (bool)NPY_HOST_BE;
    return 0;
unsupported:
    return td_fail_int("npy: %s: unsupported dtype descr '%s' (header at byte offset %zu)", p->what, d, p->base);
}

/* ---- reading -------------------------------------------------------------------------------- */
td_tensor *td_npy_parse(const void *buf, size_t len, const char *what) {
    if (!what) what = "<buffer>";
    if (!buf && len) return td_fail("npy: %s: no buffer", what);
    const unsigned char *b = buf;
    if (len < 10) return td_fail("npy: %s: file is %zu bytes, too short for a .npy header (at byte offset 0)", what, len);
    if (memcmp(b, npy_magic, 6) != 0) return td_fail("npy: %s: not a .npy file (bad magic at byte offset 0)", what);
    int major = b[6], minor = b[7];
    size_t hstart, hlen;
    if (major == 1) {
        hstart = 10;
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return td_fail("npy: %s: file is %zu bytes, too short for a version %d.%d header (at byte offset 0)",
                           what, len, major, minor);
        hstart = 12;
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    } else {
        return td_fail("npy: %s: unsupported format version %d.%d (at byte offset 6)", what, major, minor);
    }
    if (hlen > len - hstart)
        return td_fail("npy: %s: header length %zu at byte offset 8 runs past the end of the file (%zu bytes)",
                       what, hlen, len);
    npy_p p = {(const char *)b + hstart, hlen, 0, hstart, what};
    npy_type ty = {0};
    int ndim = 0, fortran = 0;
    int64_t shape[TD_MAX_DIMS];
    bool have_descr = false, have_fo = false, have_shape = false;
    if (npy_expect(&p, '{') != 0) return NULL;
    for (;;) {
        npy_ws(&p);
        if (p.i < p.n && p.s[p.i] == '}') { p.i++; break; }
        char key[32];
        size_t kpos = p.i;
        if (npy_string(&p, key, sizeof key) != 0) return NULL;
        if (npy_expect(&p, ':') != 0) return NULL;
        npy_ws(&p);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            char d[16];
            if (p.i < p.n && p.s[p.i] == '[')
                return td_fail("npy: %s: structured dtypes are not supported (header at byte offset %zu)", what,
                               p.base + p.i);
            if (npy_string(&p, d, sizeof d) != 0) return NULL;
            if (npy_descr(&p, d, &ty) != 0) return NULL;
            have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !have_fo) {
            if (npy_word(&p, "True")) fortran = 1;
            else if (npy_word(&p, "False")) fortran = 0;
            else return npy_bad(&p, "fortran_order must be True or False"), NULL;
            have_fo = true;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (npy_shape(&p, &ndim, shape) != 0) return NULL;
            have_shape = true;
        } else {
            p.i = kpos;
            return npy_bad(&p, "unexpected or repeated key"), NULL;
        }
        npy_ws(&p);
        if (p.i < p.n && p.s[p.i] == ',') { p.i++; continue; }
        if (p.i < p.n && p.s[p.i] == '}') { p.i++; break; }
        return npy_bad(&p, "expected ',' or '}'"), NULL;
    }
    npy_ws(&p);
    for (; p.i < p.n; p.i++)
        if (p.s[p.i] != 0) return npy_bad(&p, "unexpected text after the header dict"), NULL;
    if (!have_descr || !have_fo || !have_shape)
        return td_fail("npy: %s: header lacks '%s' (header at byte offset %zu)", what,
                       !have_descr ? "descr" : !have_fo ? "fortran_order" : "shape", hstart);

    /* Size checks before allocating. */
    const int64_t limit = INT64_MAX / 8;
    int64_t prod = 1;
    bool zero = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0) { zero = true; continue; }
        if (prod > limit / shape[i])
            return td_fail("npy: %s: element count of the shape overflows (header at byte offset %zu)", what, hstart);
        prod *= shape[i];
    }
    int64_t numel = zero ? 0 : prod;
    size_t dstart = hstart + hlen, avail = len - dstart;
    uint64_t need = (uint64_t)numel * (uint64_t)ty.size;
    if (need > avail)
        return td_fail("npy: %s: truncated data: need %llu bytes at offset %zu, file has %zu", what,
                       (unsigned long long)need, dstart, avail);

    td_tensor *t = td_empty(ty.to, ndim, shape);
    if (!t) {
        char why[256];
        snprintf(why, sizeof why, "%s", td_last_error());
        return td_fail("npy: %s: %s (header at byte offset %zu)", what, why, hstart);
    }
    if (numel == 0) return t;
    void *dst = ty.to == TD_F32 ? (void *)td_f32(t) : (void *)td_i64(t);
    const unsigned char *src = b + dstart;
    if (!fortran || ndim < 2) {
        bool native = !ty.swap && ((ty.kind == 'f' && ty.size == 4) || (ty.kind == 'i' && ty.size == 8));
        if (native) memcpy(dst, src, (size_t)need);
        else
            for (int64_t k = 0; k < numel; k++) npy_conv1(dst, k, src + k * ty.size, &ty);
        return t;
    }
    /* Column-major source: walk it in order (first index fastest) and scatter row-major. */
    int64_t rs[TD_MAX_DIMS], idx[TD_MAX_DIMS] = {0}, off = 0;
    rs[ndim - 1] = 1;
    for (int i = ndim - 2; i >= 0; i--) rs[i] = rs[i + 1] * shape[i + 1];
    for (int64_t k = 0; k < numel; k++) {
        npy_conv1(dst, off, src + k * ty.size, &ty);
        for (int j = 0; j < ndim; j++) {
            if (++idx[j] < shape[j]) { off += rs[j]; break; }
            off -= (shape[j] - 1) * rs[j];
            idx[j] = 0;
        }
    }
    return t;
}

td_tensor *td_npy_load(const char *path) {
    if (!path) return td_fail("npy: no path given");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return td_fail("npy: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return td_fail("npy: %s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return td_fail("npy: %s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    if (len == 0) {
        close(fd);
        return td_npy_parse("", 0, path);
    }
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return td_fail("npy: %s: cannot map: %s", path, strerror(e));
    td_tensor *t = td_npy_parse(m, len, path);
    munmap(m, len);
    return t;
}

/* ---- writing -------------------------------------------------------------------------------- */
int td_npy_save(const char *path, td_tensor *t) {
    if (!path) return td_fail_int("npy: no path given");
    if (!t) return td_fail_int("npy: %s: no tensor given", path);
    if (t->dtype != TD_F32 && t->dtype != TD_I64) return td_fail_int("npy: %s: unsupported dtype", path);
    char hdr[512];
    int k = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     t->dtype == TD_F32 ? "<f4" : "<i8");
    for (int i = 0; i < t->ndim; i++)
        k += snprintf(hdr + k, sizeof hdr - (size_t)k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    k += snprintf(hdr + k, sizeof hdr - (size_t)k, "%s), }", t->ndim == 1 ? "," : "");
    /* Pad with spaces so that 10 + header (ending in '\n') is a multiple of 64. */
    size_t total = ((size_t)10 + (size_t)k + 1 + 63) / 64 * 64, hl = total - 10;
    memset(hdr + k, ' ', hl - (size_t)k - 1);
    hdr[hl - 1] = '\n';
    unsigned char pre[10];
    memcpy(pre, npy_magic, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hl & 0xff);
    pre[9] = (unsigned char)(hl >> 8);

    size_t tl = strlen(path) + 40;
    char *tmp = malloc(tl);
    if (!tmp) return td_fail_int("npy: %s: out of memory", path);
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    bool prev = td_set_grad_enabled(false);
    td_tensor *c = td_numel(t) > 0 ? td_contiguous(t) : NULL;
    td_set_grad_enabled(prev);
    if (td_numel(t) > 0 && !c) {
        free(tmp);
        return -1; /* message from td_contiguous */
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        td_release(c);
        td_fail_int("npy: %s: cannot create %s: %s", path, tmp, strerror(e));
        free(tmp);
        return -1;
    }
    int werr = fwrite(pre, 1, 10, f) != 10 || fwrite(hdr, 1, hl, f) != hl;
    if (c && !werr) {
        size_t es = td_dtype_size(c->dtype), nb = (size_t)td_numel(c) * es;
        const unsigned char *p = c->dtype == TD_F32 ? (const unsigned char *)td_f32(c) : (const unsigned char *)td_i64(c);
        if (!NPY_HOST_BE) {
            werr = fwrite(p, 1, nb, f) != nb;
        } else {
            unsigned char tmpb[8];
            for (size_t i = 0; i < nb && !werr; i += es) {
                for (size_t j = 0; j < es; j++) tmpb[j] = p[i + es - 1 - j];
                werr = fwrite(tmpb, 1, es, f) != es;
            }
        }
    }
    td_release(c);
    if (!werr) werr = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !werr) { werr = 1; e = errno; }
    if (werr) {
        unlink(tmp);
        td_fail_int("npy: %s: write failed: %s", path, strerror(e));
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        td_fail_int("npy: %s: cannot rename %s into place: %s", path, tmp, strerror(e));
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

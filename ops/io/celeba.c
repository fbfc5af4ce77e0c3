/* CelebA's list files (text):
 *   list_attr_celeba.txt     line 1: the number of rows; line 2: the attribute names;
 *                            then one row per image: "<image> v1 .. vK", each v -1 or 1
 *   list_eval_partition.txt  one row per image: "<image> <0 train | 1 validation | 2 test>"
 * Every fault is reported with the file and the line (and the value's column where it helps). */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return td_fail("celeba: %s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return td_fail("celeba: %s: out of memory", path);
    if (bad) {
        free(buf);
        return td_fail("celeba: %s: read error", path);
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Splits the buffer into lines in place (\n or \r\n); returns the line starts (malloc'd). */
static char **lines_of(char *buf, size_t len, int64_t *nl) {
    int64_t cap = 1024, n = 0;
    char **ls = malloc(sizeof(char *) * (size_t)cap);
    char *p = buf, *end = buf + len;
    while (ls && p < end) {
        if (n == cap) {
            char **nls = realloc(ls, sizeof(char *) * (size_t)(cap *= 2));
            if (!nls) {
                free(ls);
                return NULL;
            }
            ls = nls;
        }
        ls[n++] = p;
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        *e = 0;
        if (e > p && e[-1] == '\r') e[-1] = 0;
        p = e + 1;
    }
    *nl = n;
    return ls;
}

static char *next_tok(char **s) {
    char *p = *s;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) {
        *s = p;
        return NULL;
    }
    char *t = p;
    while (*p && *p != ' ' && *p != '\t') p++;
    if (*p) *p++ = 0;
    *s = p;
    return t;
}

static int blank(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    return *s == 0;
}

typedef struct {
    const char *name;
    int64_t row; /* index into the attribute rows */
} name_row;

static int cmp_name_row(const void *a, const void *b) {
    return strcmp(((const name_row *)a)->name, ((const name_row *)b)->name);
}

void td_celeba_free(td_celeba *c) {
    if (!c) return;
    for (int k = 0; k < c->nattr; k++) free(c->attr_names ? c->attr_names[k] : NULL);
    free(c->attr_names);
    for (int64_t i = 0; i < c->n; i++) free(c->images ? c->images[i] : NULL);
    free(c->images);
    free(c->labels);
    memset(c, 0, sizeof *c);
}

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int td_celeba_read(const char *attr_path, const char *part_path, int split, td_celeba *out) {
    memset(out, 0, sizeof *out);
    size_t alen = 0, plen = 0;
    char *abuf = NULL, *pbuf = NULL, **al = NULL, **pl = NULL;
    int8_t *vals = NULL;
    name_row *idx = NULL;
    int64_t nal = 0, npl = 0;
    int rc = -1;
    if (!(abuf = slurp(attr_path, &alen))) goto done;
    if (!(al = lines_of(abuf, alen, &nal))) {
        td_fail("celeba: out of memory");
        goto done;
    }
    if (nal < 2) {
        td_fail("celeba: %s: line %lld: the file ends before the attribute names (line 2)", attr_path, (long long)nal + 1);
        goto done;
    }
    char *p = al[0], *tok = next_tok(&p), *endp = NULL;
    long long count = tok ? strtoll(tok, &endp, 10) : -1;
    if (!tok || *endp || count < 0 || !blank(p)) {
        td_fail("celeba: %s: line 1: expected the number of rows, found '%.40s'", attr_path, al[0]);
        goto done;
    }
    /* attribute names */
    p = al[1];
    int K = 0;
    char *names[TD_SRC_MAX_TASKS];
    while ((tok = next_tok(&p))) {
        if (K == TD_SRC_MAX_TASKS) {
            td_fail("celeba: %s: line 2: more than %d attribute names", attr_path, TD_SRC_MAX_TASKS);
            goto done;
        }
        names[K++] = tok;
    }
    if (K == 0) {
        td_fail("celeba: %s: line 2: no attribute names", attr_path);
        goto done;
    }
    /* rows */
    int64_t nrows = 0;
    vals = malloc((size_t)(nal > 2 ? nal - 2 : 1) * (size_t)K);
    idx = malloc(sizeof *idx * (size_t)(nal > 2 ? nal - 2 : 1));
    if (!vals || !idx) {
        td_fail("celeba: out of memory");
        goto done;
    }
    for (int64_t ln = 2; ln < nal; ln++) {
        p = al[ln];
        char *name = next_tok(&p);
        if (!name) {
            if (ln == nal - 1) break; /* a final empty line */
            td_fail("celeba: %s: line %lld: empty line among the rows", attr_path, (long long)ln + 1);
            goto done;
        }
        int k = 0;
        while ((tok = next_tok(&p))) {
            if (k == K) {
                td_fail("celeba: %s: line %lld: more than %d values after the image name", attr_path, (long long)ln + 1, K);
                goto done;
            }
            if (strcmp(tok, "1") == 0) vals[nrows * K + k] = 1;
            else if (strcmp(tok, "-1") == 0) vals[nrows * K + k] = 0;
            else {
                td_fail("celeba: %s: line %lld, value %d (%s): expected -1 or 1, found '%.20s'", attr_path,
                        (long long)ln + 1, k + 1, names[k], tok);
                goto done;
            }
            k++;
        }
        if (k != K) {
            td_fail("celeba: %s: line %lld: expected %d values after the image name '%s', found %d", attr_path,
                    (long long)ln + 1, K, name, k);
            goto done;
        }
        idx[nrows].name = name;
        idx[nrows].row = nrows;
        nrows++;
    }
    if (nrows != count) {
        td_fail("celeba: %s: line 1 announces %lld rows, the file holds %lld (a missing attribute row?)", attr_path, count,
                (long long)nrows);
        goto done;
    }
    qsort(idx, (size_t)nrows, sizeof *idx, cmp_name_row);
    for (int64_t i = 1; i < nrows; i++)
        if (strcmp(idx[i].name, idx[i - 1].name) == 0) {
            td_fail("celeba: %s: image '%s' has two rows (lines %lld and %lld)", attr_path, idx[i].name,
                    (long long)(idx[i - 1].row < idx[i].row ? idx[i - 1].row : idx[i].row) + 3,
                    (long long)(idx[i - 1].row < idx[i].row ? idx[i].row : idx[i - 1].row) + 3);
            goto done;
        }
    /* partition */
    if (!(pbuf = slurp(part_path, &plen))) goto done;
    if (!(pl = lines_of(pbuf, plen, &npl))) {
        td_fail("celeba: out of memory");
        goto done;
    }
    int64_t *rows = malloc(sizeof(int64_t) * (size_t)(npl + 1));
    char **sel = calloc((size_t)npl + 1, sizeof(char *));
    if (!rows || !sel) {
        free(rows);
        free(sel);
        td_fail("celeba: out of memory");
        goto done;
    }
    int64_t n = 0;
    for (int64_t ln = 0; ln < npl; ln++) {
        p = pl[ln];
        char *name = next_tok(&p), *s = next_tok(&p);
        if (!name && ln == npl - 1) break;
        if (!name || !s || !blank(p) || strlen(s) != 1 || s[0] < '0' || s[0] > '2') {
            td_fail("celeba: %s: line %lld: expected '<image> <0, 1 or 2>'", part_path, (long long)ln + 1);
            goto part_fail;
        }
        if (split >= 0 && s[0] - '0' != split) continue;
        name_row key = {name, 0};
        name_row *hit = bsearch(&key, idx, (size_t)nrows, sizeof *idx, cmp_name_row);
        if (!hit) {
            td_fail("celeba: %s has no attribute row for '%s' (line %lld of %s)", attr_path, name, (long long)ln + 1,
                    part_path);
            goto part_fail;
        }
        rows[n] = hit->row;
        sel[n] = name;
        n++;
    }
    out->nattr = K;
    out->n = n;
    out->attr_names = calloc((size_t)K, sizeof(char *));
    out->images = calloc((size_t)n + 1, sizeof(char *));
    out->labels = malloc(sizeof(int64_t) * ((size_t)K * (size_t)n + 1));
    if (!out->attr_names || !out->images || !out->labels) {
        td_fail("celeba: out of memory");
        goto part_fail;
    }
    for (int k = 0; k < K; k++)
        if (!(out->attr_names[k] = dupstr(names[k]))) {
            td_fail("celeba: out of memory");
            goto part_fail;
        }
    for (int64_t i = 0; i < n; i++) {
        if (!(out->images[i] = dupstr(sel[i]))) {
            td_fail("celeba: out of memory");
            goto part_fail;
        }
        for (int k = 0; k < K; k++) out->labels[(int64_t)k * n + i] = vals[rows[i] * K + k];
    }
    rc = 0;
part_fail:
    free(rows);
    free(sel);
    if (rc) td_celeba_free(out);
done:
    free(abuf);
    free(pbuf);
    free(al);
    free(pl);
    free(vals);
    free(idx);
    return rc;
}

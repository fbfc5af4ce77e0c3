/* Text form of a tensor: small ones whole, large ones summarised (leading and trailing rows
 * and columns; a vector longer than VECTOR_MAX too, since it prints one value a line), one
 * number format for the whole tensor (fixed, with a common scale factor, or scientific), and a
 * footer with the type and shape. Rows wider than the print width (the terminal's, set by the
 * host) are cut into blocks of columns headed "Columns 1 to 8", as Torch7 printed them. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

#define SUMMARY_NUMEL 1000 /* above this, print only the edges */
#define VECTOR_MAX 32      /* a longer vector prints only its edges */
#define EDGE 3

static int print_width = 80;

void td_set_print_width(int columns) { print_width = columns < 20 ? 20 : columns; }
int td_get_print_width(void) { return print_width; }

typedef struct {
    char *s;
    size_t n, cap;
    int fail;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->n;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->fail = 1; return; }
        if (b->s && (size_t)k < room) { b->n += (size_t)k; return; }
        size_t cap = (b->cap + (size_t)k + 64) * 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->fail = 1; return; }
        b->s = p;
        b->cap = cap;
    }
}

typedef struct {
    int mode; /* 0 integer, 1 fixed, 2 scientific */
    double scale;
    int width, prec;
} numfmt;

static bool shown(int64_t i, int64_t n, bool summ) { return !summ || n <= 2 * EDGE || i < EDGE || i >= n - EDGE; }

static numfmt choose(const td_tensor *t, bool summ) {
    numfmt f = {0, 1.0, 1, 4};
    double maxa = 0, mina = INFINITY;
    bool ints = true, nonfinite = false;
    int64_t n = td_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (summ) { /* only the printed edges decide the format */
            int64_t r = i;
            bool vis = true;
            for (int d = t->ndim - 1; d >= 0 && vis; d--) {
                vis = shown(r % t->shape[d], t->shape[d], true);
                r /= t->shape[d];
            }
            if (!vis) continue;
        }
        double v = td_get_flat(t, i);
        if (!isfinite(v)) { nonfinite = true; continue; }
        double a = fabs(v);
        if (a > maxa) maxa = a;
        if (a > 0 && a < mina) mina = a;
        if (v != floor(v)) ints = false;
    }
    if (t->dtype == TD_I64 || (ints && maxa < 1e9)) {
        f.mode = 0;
        f.width = maxa > 0 ? (int)floor(log10(maxa)) + 2 : 2;
        if (nonfinite && f.width < 4) f.width = 4;
        return f;
    }
    if (mina == INFINITY) mina = maxa;
    double e_max = maxa > 0 ? floor(log10(maxa)) : 0, e_min = mina > 0 ? floor(log10(mina)) : 0;
    if (e_max - e_min > 6 || e_max > 8 || e_max < -8) {
        f.mode = 2;
        f.width = 11;
        return f;
    }
    f.mode = 1;
    if (e_max >= 3 || e_max < -2) f.scale = pow(10, e_max); /* a common factor printed once */
    double m = maxa / f.scale;
    f.width = (m >= 1 ? (int)floor(log10(m)) + 1 : 1) + f.prec + 2;
    return f;
}

static void put_num(sbuf *b, numfmt f, double v) {
    if (!isfinite(v)) { put(b, " %*s", f.width, isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf")); return; }
    if (f.mode == 0) put(b, " %*.0f", f.width, v);
    else if (f.mode == 1) put(b, " %*.*f", f.width, f.prec, v / f.scale);
    else put(b, " %*.4e", f.width, v);
}

/* Prints the matrix given by the last two dims (or the vector) at base index idx. */
static void put_matrix(sbuf *b, const td_tensor *t, int64_t *idx, numfmt f, bool summ) {
    int nd = t->ndim;
    if (nd == 1) {
        summ = summ || t->shape[0] > VECTOR_MAX;
        for (int64_t i = 0; i < t->shape[0]; i++) {
            if (!shown(i, t->shape[0], summ)) {
                if (i == EDGE) put(b, " %*s\n", f.width, "...");
                continue;
            }
            idx[0] = i;
            put_num(b, f, td_get(t, idx));
            put(b, "\n");
        }
        return;
    }
    int64_t R = t->shape[nd - 2], C = t->shape[nd - 1];
    /* columns per block: a summarised matrix shows 2 * EDGE of them, which always fit */
    int64_t per = summ ? C : (int64_t)print_width / (f.width + 1);
    if (per < 1) per = 1;
    for (int64_t c0 = 0; c0 < C; c0 += per) {
        int64_t c1 = c0 + per < C ? c0 + per : C;
        if (per < C) put(b, "%sColumns %lld to %lld\n", c0 > 0 ? "\n" : "", (long long)c0 + 1, (long long)c1);
        for (int64_t r = 0; r < R; r++) {
            if (!shown(r, R, summ)) {
                if (r == EDGE) put(b, " ...\n");
                continue;
            }
            idx[nd - 2] = r;
            for (int64_t c = c0; c < c1; c++) {
                if (!shown(c, C, summ)) {
                    if (c == EDGE) put(b, " ...");
                    continue;
                }
                idx[nd - 1] = c;
                put_num(b, f, td_get(t, idx));
            }
            put(b, "\n");
        }
    }
}

char *td_format(const td_tensor *t) {
    sbuf b = {0};
    char sh[TD_SHAPE_BUF];
    int64_t n = td_numel(t);
    bool summ = n > SUMMARY_NUMEL;
    numfmt f = choose(t, summ);
    int64_t idx[TD_MAX_DIMS] = {0};
    if (t->ndim == 0) {
        put_num(&b, f, td_get(t, idx));
        put(&b, "\n");
    } else if (n > 0) {
        if (f.mode == 1 && f.scale != 1.0) put(&b, " %g *\n", f.scale);
        if (t->ndim <= 2) {
            put_matrix(&b, t, idx, f, summ);
        } else { /* one matrix per index of the leading dims */
            int lead = t->ndim - 2;
            int64_t nm = 1;
            for (int i = 0; i < lead; i++) nm *= t->shape[i];
            for (int64_t m = 0; m < nm; m++) {
                int64_t rem = m;
                bool show = true;
                for (int i = lead - 1; i >= 0; i--) {
                    idx[i] = rem % t->shape[i];
                    rem /= t->shape[i];
                    if (!shown(idx[i], t->shape[i], summ)) show = false;
                }
                if (!show) {
                    if (m > 0 && idx[lead - 1] == EDGE) put(&b, "...\n\n");
                    continue;
                }
                put(&b, "(");
                for (int i = 0; i < lead; i++) put(&b, "%lld,", (long long)idx[i] + 1);
                put(&b, ".,.) =\n");
                put_matrix(&b, t, idx, f, summ);
                put(&b, "\n");
            }
        }
    }
    put(&b, "[%s tensor of size %s", td_dtype_name(t->dtype), td_shape_str(t, sh, sizeof sh));
    if (t->node) put(&b, ", grad_fn %s", t->node->name);
    else if (t->requires_grad) put(&b, ", requires_grad");
    put(&b, "]");
    if (b.fail) {
        free(b.s);
        return td_fail("print: out of memory");
    }
    return b.s;
}

/* matmul: 1-D, 2-D and batched with broadcasting, through OpenBLAS sgemm.
 * 1-D operands are promoted with (differentiable) unsqueeze views, so the kernel below only
 * sees >= 2-D operands: a (..., M, K) @ b (..., K, N) -> (..., M, N). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

/* Plain triple loop: the specification the tests hold td_gemm to. */
void td_gemm_ref(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
            C[i * ldc + j] = (float)(alpha * s + (beta != 0 ? beta * C[i * ldc + j] : 0));
        }
}

#define GEMM_CHUNK ((int64_t)1 << 32) /* multiply-adds per sgemm call: ~50 ms, so Ctrl-C is prompt */

/* One thread's share: sgemm in row chunks of at most GEMM_CHUNK multiply-adds. */
static int gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t rows = M;
    if (M * N * K > GEMM_CHUNK) rows = GEMM_CHUNK / (N * K) > 0 ? GEMM_CHUNK / (N * K) : 1;
    for (int64_t i0 = 0; i0 < M; i0 += rows) {
        if (td_interrupted()) return -1;
        int64_t m = M - i0 < rows ? M - i0 : rows;
        const float *Ai = ta ? A + i0 : A + i0 * lda;
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)N,
                    (int)K, alpha, Ai, (int)lda, B, (int)ldb, beta, C + i0 * ldc, (int)ldc);
    }
    return 0;
}

/* OpenBLAS runs single-threaded (td_set_num_threads); the threads here are OpenMP's. Its own
 * pthreads spin in sched_yield between calls, and on a 2-core machine that spinning took an
 * eighth of a training step from the OpenMP workers; one pool of OpenMP threads does not.
 * A large product is split into one block of rows (or columns) per thread; a small one, or one
 * made inside a parallel region, runs on the calling thread. */
int td_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
            const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return 0;
    if (K == 0) { /* BLAS leaves C alone with K = 0 only if beta = 1 */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
        return 0;
    }
    if (M * N * K > GEMM_CHUNK) td_note_long_op("matmul");
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if ((double)M * N * K < 1 << 17) nt = 1; /* ~3 us of work: a parallel region costs more */
    bool by_rows = M >= N;
    int64_t len = by_rows ? M : N, unit = by_rows ? 4 : 16; /* rows: register-tile multiple; columns: a vector */
    if (nt > len / unit) nt = (int)(len / unit);
    if (nt <= 1) return gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) ? td_fail_int("matmul: interrupted") : 0;
    int64_t part = (len + nt - 1) / nt;
    part = (part + unit - 1) / unit * unit;
    int failed = 0;
    #pragma omp parallel for num_threads(nt) schedule(static, 1) reduction(| : failed)
    for (int t = 0; t < nt; t++) {
        int64_t a0 = t * part, n = len - a0 < part ? len - a0 : part;
        if (n <= 0) continue;
        if (by_rows) failed |= gemm_serial(ta, tb, n, N, K, alpha, ta ? A + a0 : A + a0 * lda, lda, B, ldb, beta,
                                           C + a0 * ldc, ldc);
        else failed |= gemm_serial(ta, tb, M, n, K, alpha, A, lda, tb ? B + a0 * ldb : B + a0, ldb, beta, C + a0, ldc);
    }
    return failed ? td_fail_int("matmul: interrupted") : 0;
}

/* A 2-D matrix view usable by BLAS: unit stride on one of its two dims. */
static bool blas_ready(int64_t s0, int64_t s1, int64_t rows, int64_t cols, bool *trans, int64_t *ld) {
    if (s1 == 1 && s0 >= (cols > 1 ? cols : 1)) {
        *trans = false;
        *ld = s0;
        return true;
    }
    if (s0 == 1 && s1 >= (rows > 1 ? rows : 1)) {
        *trans = true;
        *ld = s1;
        return true;
    }
    if (rows <= 1 && s1 == 1) { *trans = false; *ld = cols > 1 ? cols : 1; return true; }
    if (cols <= 1 && s0 == 1) { *trans = true; *ld = rows > 1 ? rows : 1; return true; }
    return false;
}

static bool mat_ready(const td_tensor *t, bool *trans, int64_t *ld) {
    int n = t->ndim;
    return blas_ready(t->stride[n - 2], t->stride[n - 1], t->shape[n - 2], t->shape[n - 1], trans, ld);
}

static void matmul_backward(td_node *n, td_tensor *g) {
    td_tensor *a = n->saved[0], *b = n->saved[1];
    if (n->in[0]) { /* ga = g @ b^T */
        td_tensor *bt = td_transpose(b, -1, -2), *ga = bt ? td_matmul(g, bt) : NULL;
        td_node_accum(n, 0, ga);
        td_release(ga);
        td_release(bt);
    }
    if (n->in[1]) { /* gb = a^T @ g */
        td_tensor *at = td_transpose(a, -1, -2), *gb = at ? td_matmul(at, g) : NULL;
        td_node_accum(n, 1, gb);
        td_release(gb);
        td_release(at);
    }
}

static td_tensor *matmul_nd(td_tensor *a, td_tensor *b) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    int na = a->ndim, nb = b->ndim;
    int64_t M = a->shape[na - 2], K = a->shape[na - 1], K2 = b->shape[nb - 2], N = b->shape[nb - 1];
    if (K != K2)
        return td_fail("matmul: (%s) @ (%s): inner sizes differ (%lld vs %lld)", td_shape_str(a, b1, sizeof b1),
                       td_shape_str(b, b2, sizeof b2), (long long)K, (long long)K2);
    if (a->dtype != TD_F32 || b->dtype != TD_F32)
        return td_fail("matmul: needs float32 tensors, got %s and %s", td_dtype_name(a->dtype), td_dtype_name(b->dtype));
    /* broadcast batch dims */
    int nbat_a = na - 2, nbat_b = nb - 2, nbat = nbat_a > nbat_b ? nbat_a : nbat_b;
    int64_t bshape[TD_MAX_DIMS];
    for (int i = 0; i < nbat; i++) {
        int ia = i - (nbat - nbat_a), ib = i - (nbat - nbat_b);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return td_fail("matmul: (%s) @ (%s): batch dimensions cannot be broadcast", td_shape_str(a, b1, sizeof b1),
                           td_shape_str(b, b2, sizeof b2));
        bshape[i] = sa == 1 ? sb : sa;
    }
    int64_t oshape[TD_MAX_DIMS];
    memcpy(oshape, bshape, sizeof(int64_t) * nbat);
    oshape[nbat] = M;
    oshape[nbat + 1] = N;
    td_tensor *out = td_empty(TD_F32, nbat + 2, oshape);
    if (!out) return NULL;
    bool ta, tb;
    int64_t lda, ldb;
    td_tensor *ac = NULL, *bc = NULL, *A = a, *B = b;
    if (!mat_ready(A, &ta, &lda)) {
        A = ac = td_contiguous(a);
        if (!A) goto fail;
        mat_ready(A, &ta, &lda);
    }
    if (!mat_ready(B, &tb, &ldb)) {
        B = bc = td_contiguous(b);
        if (!B) goto fail;
        mat_ready(B, &tb, &ldb);
    }
    int64_t nbatch = 1;
    for (int i = 0; i < nbat; i++) nbatch *= bshape[i];
    /* (B, M, K) @ (K, N) with dense rows: one GEMM of (B*M, K) */
    bool fold = nbat_b == 0 && !ta && nbatch > 1;
    for (int i = 0; fold && i < nbat_a; i++) {
        int64_t want = (i == nbat_a - 1) ? M * A->stride[na - 2] : A->shape[i + 1] * A->stride[i + 1];
        if (A->shape[i] != 1 && A->stride[i] != want) fold = false;
    }
    if (fold) {
        if (td_gemm(false, tb, nbatch * M, N, K, 1.0f, td_f32(A), lda, td_f32(B), ldb, 0.0f, td_f32(out), N)) goto fail;
    } else {
        for (int64_t bi = 0; bi < nbatch; bi++) {
            int64_t rem = bi, oa = 0, ob = 0;
            for (int i = nbat - 1; i >= 0; i--) {
                int64_t idx = rem % bshape[i];
                rem /= bshape[i];
                int ia = i - (nbat - nbat_a), ib = i - (nbat - nbat_b);
                if (ia >= 0 && A->shape[ia] != 1) oa += idx * A->stride[ia];
                if (ib >= 0 && B->shape[ib] != 1) ob += idx * B->stride[ib];
            }
            if (td_gemm(ta, tb, M, N, K, 1.0f, td_f32(A) + oa, lda, td_f32(B) + ob, ldb, 0.0f, td_f32(out) + bi * M * N, N))
                goto fail;
        }
    }
    td_release(ac);
    td_release(bc);
    td_tensor *ins[2] = {a, b};
    td_node *n = td_record(out, "matmul", matmul_backward, 2, ins);
    if (n) {
        if (n->in[0]) td_node_save(n, 1, b);
        if (n->in[1]) td_node_save(n, 0, a);
    }
    return out;
fail:
    td_release(ac);
    td_release(bc);
    td_release(out);
    return NULL;
}

td_tensor *td_matmul(td_tensor *a, td_tensor *b) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (a->ndim == 0 || b->ndim == 0)
        return td_fail("matmul: (%s) @ (%s): both operands need at least one dimension", td_shape_str(a, b1, sizeof b1),
                       td_shape_str(b, b2, sizeof b2));
    if (a->ndim >= 2 && b->ndim >= 2) return matmul_nd(a, b);
    /* promote 1-D operands, multiply, drop the promoted dims */
    if (a->ndim == 1 && b->ndim >= 1 && a->shape[0] != b->shape[b->ndim >= 2 ? b->ndim - 2 : 0])
        return td_fail("matmul: (%s) @ (%s): inner sizes differ", td_shape_str(a, b1, sizeof b1), td_shape_str(b, b2, sizeof b2));
    td_tensor *a2 = a->ndim == 1 ? td_unsqueeze(a, 0) : (td_retain(a), a);
    td_tensor *b2t = b->ndim == 1 ? td_unsqueeze(b, 1) : (td_retain(b), b);
    td_tensor *r = (a2 && b2t) ? matmul_nd(a2, b2t) : NULL, *r2 = NULL;
    if (r && b->ndim == 1) {
        r2 = td_squeeze(r, -1);
        td_release(r);
        r = r2;
    }
    if (r && a->ndim == 1) {
        r2 = td_squeeze(r, -1 - (b->ndim == 1 ? 0 : 1));
        td_release(r);
        r = r2;
    }
    td_release(a2);
    td_release(b2t);
    return r;
}

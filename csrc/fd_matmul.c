/* fd_matmul.c -- batched dense-layer matmul, forward and backward (contract rows matmul_fwd,
 * matmul_bwd_x, matmul_bwd_w).
 *
 * Shapes (all C-contiguous, one element type):
 *   x (B, M, K)   w (Bw, K, N)   b (Bw, N)   y, dy (B, M, N)   dx like x   dw like w   db like b
 * with Bw == 1 (one weight for the whole batch: an ordinary Linear layer) or Bw == B (a stack of
 * independent layers). Item i uses weight j = (Bw == 1 ? 0 : i).
 *
 *   fwd    y[i]   = x[i] @ w[j] (+ b[j] broadcast over the M rows)        (overwrites y)
 *   bwd_x  dx[i] += dy[i] @ w[j]^T                                         (accumulates)
 *   bwd_w  dw[j] += sum over i mapped to j of x[i]^T @ dy[i]               (accumulates)
 *          db[j] += column sums of those dy[i]                             (db may be NULL)
 *
 * All three run on the GEMM engine of fd_gemm.c, which reads the transposes (w^T, x^T) in place.
 * With Bw == 1 the batch folds into one GEMM: rows B*M for fwd / bwd_x, reduction length B*M for
 * bwd_w. Results are deterministic and independent of the thread count: every output element is
 * computed by one thread in a fixed order (no atomics, no racing partial sums); see fd_gemm.h.
 *
 * Errors: FD_ERR_SIZE for a negative dimension or an array above FD_MAX_ELEMS elements, FD_ERR_SHAPE
 * if Bw is neither 1 nor B, FD_ERR_NULL for a NULL array that has elements (b / db may always be
 * NULL), FD_ERR_ALIGN for an array not aligned to its element type. Nothing is written on error.
 */
#ifndef FD_T /* untyped part */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fd_internal.h"
#include "fd_gemm.h"

/* Checks shared by the three kernels: dimensions, and every array size (B*M*K, B*M*N, Bw*K*N, and
 * the B*M rows) within FD_MAX_ELEMS, so that no product below (here or in the GEMM engine) can
 * overflow. */
static int mm_check_dims(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N)
{
    int64_t bm, t;
    if (B < 0 || Bw < 0 || M < 0 || K < 0 || N < 0) return FD_ERR_SIZE;
    if (Bw != 1 && Bw != B) return FD_ERR_SHAPE;
    FD_CHECK(fd_mul_size(B, M, &bm));
    FD_CHECK(fd_mul_size(bm, K, &t));
    FD_CHECK(fd_mul_size(bm, N, &t));
    FD_CHECK(fd_mul_size(Bw, K, &t));
    FD_CHECK(fd_mul_size(t, N, &t));
    return FD_OK;
}

/* the GEMM of  out[i] (+)= x[i] @ w[j]  over the batch (fwd) */
static void mm_fwd_args(fd_gemm_args *g, int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                        void *y, const void *x, const void *w, const void *b)
{
    memset(g, 0, sizeof *g);
    const int fold = Bw == 1;
    g->batch = fold ? 1 : B;
    g->m = fold ? B * M : M;
    g->n = N;
    g->k = K;
    g->a = x; g->rsa = K; g->csa = 1; g->bsa = M * K;
    g->b = w; g->rsb = N; g->csb = 1; g->bsb = K * N;
    g->c = y; g->ldc = N; g->bsc = M * N;
    g->bias = b; g->bsbias = N;
    g->accumulate = 0;
}

/* dx[i] += dy[i] @ w[j]^T : C (M x K) = A (M x N, rows of dy) . B (N x K, B(p, q) = w[q*N + p]) */
static void mm_bwd_x_args(fd_gemm_args *g, int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                          void *dx, const void *dy, const void *w)
{
    memset(g, 0, sizeof *g);
    const int fold = Bw == 1;
    g->batch = fold ? 1 : B;
    g->m = fold ? B * M : M;
    g->n = K;
    g->k = N;
    g->a = dy; g->rsa = N; g->csa = 1; g->bsa = M * N;
    g->b = w; g->rsb = 1; g->csb = N; g->bsb = K * N;
    g->c = dx; g->ldc = K; g->bsc = M * K;
    g->accumulate = 1;
}

/* dw[j] += x[i]^T @ dy[i] : C (K x N) = A (K x M, A(q, p) = x[p*K + q]) . B (M x N, rows of dy);
 * with Bw == 1 the reduction runs over all B*M rows. db[j] += column sums of B. */
static void mm_bwd_w_args(fd_gemm_args *g, int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                          void *dw, void *db, const void *x, const void *dy)
{
    memset(g, 0, sizeof *g);
    const int fold = Bw == 1;
    g->batch = fold ? 1 : B;
    g->m = K;
    g->n = N;
    g->k = fold ? B * M : M;
    g->a = x; g->rsa = 1; g->csa = K; g->bsa = M * K;
    g->b = dy; g->rsb = N; g->csb = 1; g->bsb = M * N;
    g->c = dw; g->ldc = N; g->bsc = K * N;
    g->bsum = db; g->bsbsum = N;
    g->accumulate = 1;
}

#define FD_TYPED_FILE "fd_matmul.c"
#include "fd_typed.h"

#else /* typed part, included once per element type by fd_typed.h */

/* defines fd_matmul_fwd_f32 and fd_matmul_fwd_f64 (FD_S appends the type suffix) */
int FD_S(fd_matmul_fwd)(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N, FD_T *y,
                        const FD_T *x, const FD_T *w, const FD_T *b)
{
    FD_CHECK(mm_check_dims(B, Bw, M, K, N));
    FD_CHECK(fd_check_ptr(y, B * M * N, sizeof(FD_T)));
    if (B * M * N == 0) return FD_OK; /* nothing to write */
    FD_CHECK(fd_check_ptr(x, B * M * K, sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(w, Bw * K * N, sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(b, 0, sizeof(FD_T)));
    fd_gemm_args g;
    mm_fwd_args(&g, B, Bw, M, K, N, y, x, w, b);
    FD_S(fd_gemm)(&g);
    return FD_OK;
}

/* defines fd_matmul_bwd_x_f32 and fd_matmul_bwd_x_f64 (FD_S appends the type suffix) */
int FD_S(fd_matmul_bwd_x)(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N, FD_T *dx,
                          const FD_T *dy, const FD_T *w)
{
    FD_CHECK(mm_check_dims(B, Bw, M, K, N));
    FD_CHECK(fd_check_ptr(dx, B * M * K, sizeof(FD_T)));
    if (B * M * K == 0 || N == 0) return FD_OK; /* dx += 0 */
    FD_CHECK(fd_check_ptr(dy, B * M * N, sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(w, Bw * K * N, sizeof(FD_T)));
    fd_gemm_args g;
    mm_bwd_x_args(&g, B, Bw, M, K, N, dx, dy, w);
    FD_S(fd_gemm)(&g);
    return FD_OK;
}

/* defines fd_matmul_bwd_w_f32 and fd_matmul_bwd_w_f64 (FD_S appends the type suffix) */
int FD_S(fd_matmul_bwd_w)(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N, FD_T *dw,
                          FD_T *db, const FD_T *x, const FD_T *dy)
{
    FD_CHECK(mm_check_dims(B, Bw, M, K, N));
    FD_CHECK(fd_check_ptr(dw, Bw * K * N, sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(db, 0, sizeof(FD_T)));
    if (B * M * N == 0) return FD_OK; /* dy is empty: dw += 0, db += 0 */
    FD_CHECK(fd_check_ptr(dy, B * M * N, sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(x, B * M * K, sizeof(FD_T)));
    fd_gemm_args g;
    mm_bwd_w_args(&g, B, Bw, M, K, N, dw, db, x, dy);
    FD_S(fd_gemm)(&g);
    return FD_OK;
}

#endif /* FD_T */

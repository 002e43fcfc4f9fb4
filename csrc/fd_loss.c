/* fd_loss.c -- losses of the dense layers with their gradient, in one pass (contract rows
 * mse_fwd_bwd, xent_fwd_bwd).
 *
 * mse   pred, target, dpred: n elements.
 *         d = pred - target (in T);  dpred += (T)(2*scale) * d;  loss += (double)d * d
 *         *loss_out = scale * loss
 * xent  logits, dlogits: (R, C) row-major; labels: (R,) int64 in [0, C).
 *         per row: mx = max_c logits;  e_c = exp(logits_c - mx) (in T; float32: fd_vexpf);
 *         s = sum_c e_c (float64);
 *         loss += (mx + log s) - logits[label]                   (float64)
 *         dlogits_c += (T)scale * (e_c * (T)(1/s) - [c == label])  (the one subtracted in T)
 *         *loss_out = scale * loss
 *       Max-shifted: no overflow for any finite logits. Labels are all checked first: one out of
 *       range gives FD_ERR_ARG with nothing written.
 * The loss sums over fixed chunks of the element space (fd_run_chunks: their number depends only on
 * the sizes), combined in chunk order: the same bits for any thread count. For xent a row belongs to
 * the chunk holding its first element.
 * Errors: FD_ERR_SIZE (negative size, or above FD_MAX_ELEMS elements), FD_ERR_NULL (NULL array
 * with elements, or NULL loss_out), FD_ERR_ALIGN (an array not aligned to its element type),
 * FD_ERR_ARG (label out of range, or a NaN / infinite scale).
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include <math.h>

#include "fd_internal.h"
#include "fd_nn_vmath.h"

static double loss_combine(const double *acc, int64_t total)
{
    const int64_t nch = fd_nchunks(total);
    double s = 0.0;
    for (int64_t c = 0; c < nch; c++) s += acc[c * FD_ACC_WORDS];
    return s;
}

/* softmax cross-entropy: rows whose first element lies in a chunk's [off, off + len) */
typedef struct {
    void *dlogits;
    const void *logits;
    const int64_t *labels;
    int64_t R, C;
    double scale;
} xent_ctx;

static void xent_rows(const xent_ctx *c, int64_t off, int64_t len, int64_t *r0, int64_t *r1)
{
    const int64_t C = c->C;
    *r0 = (off + C - 1) / C;
    *r1 = (off + len + C - 1) / C;
    if (*r1 > c->R) *r1 = c->R;
}

#if FD_X86_DISPATCH
/* float32, AVX2+FMA: the exponentials 8 at a time (row tails masked); the row sum s in float64 in
 * column order, as in the scalar code */
FD_TARGET_AVX2 static void xent_chunk_f32_vec(const void *ctx, int64_t t, int64_t off, int64_t len,
                                              double *acc)
{
    (void)t;
    const xent_ctx *c = (const xent_ctx *)ctx;
    const int64_t C = c->C;
    int64_t r0, r1;
    xent_rows(c, off, len, &r0, &r1);
    const __m256 sc = _mm256_set1_ps((float)c->scale), one = _mm256_set1_ps(1.0f);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    double loss = 0.0;
    for (int64_t r = r0; r < r1; r++) {
        const float *l = (const float *)c->logits + r * C;
        float *g = (float *)c->dlogits + r * C;
        const int64_t y = c->labels[r];
        float mx = l[0];
        for (int64_t j = 1; j < C; j++) mx = l[j] > mx ? l[j] : mx;
        const __m256 vmx = _mm256_set1_ps(mx);
        double s = 0.0;
        float e[8];
        for (int64_t j = 0; j < C; j += 8) {
            const int64_t rem = C - j < 8 ? C - j : 8;
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), iota);
            _mm256_storeu_ps(e, fd_vexpf8(_mm256_sub_ps(_mm256_maskload_ps(l + j, m), vmx)));
            for (int64_t q = 0; q < rem; q++) s += (double)e[q];
        }
        loss += ((double)mx + log(s)) - (double)l[y];
        const __m256 inv = _mm256_set1_ps((float)(1.0 / s));
        for (int64_t j = 0; j < C; j += 8) {
            const int64_t rem = C - j < 8 ? C - j : 8;
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), iota);
            __m256 p = _mm256_mul_ps(fd_vexpf8(_mm256_sub_ps(_mm256_maskload_ps(l + j, m), vmx)), inv);
            const int at = (y >= j && y < j + 8) ? (int)(y - j) : -1;
            __m256 hot = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_set1_epi32(at), iota));
            p = _mm256_sub_ps(p, _mm256_and_ps(hot, one));
            _mm256_maskstore_ps(g + j, m, _mm256_fmadd_ps(sc, p, _mm256_maskload_ps(g + j, m)));
        }
    }
    acc[0] += loss;
}
#endif /* FD_X86_DISPATCH */

#define FD_TYPED_FILE "fd_loss.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

#define LOSS_EXP(v) (sizeof(FD_T) == 4 ? (FD_T)fd_vexpf((float)(v)) : (FD_T)exp((double)(v)))

/* ---- mse ---- */
typedef struct {
    FD_T *dpred;
    const FD_T *pred, *target;
    FD_T coef; /* 2 * scale */
} FD_S(mse_ctx);

FD_INLINE void FD_BODY(mse_chunk)(const void *ctx, int64_t t, int64_t off, int64_t len, double *acc)
{
    (void)t;
    const FD_S(mse_ctx) *c = (const FD_S(mse_ctx) *)ctx;
    FD_T *FD_RESTRICT g = c->dpred + off;
    const FD_T *FD_RESTRICT p = c->pred + off, *FD_RESTRICT q = c->target + off;
    const FD_T coef = c->coef;
    double s = 0.0;
    for (int64_t i = 0; i < len; i++) {
        FD_T d = p[i] - q[i];
        g[i] += coef * d;
        s += (double)d * (double)d;
    }
    acc[0] += s;
}

FD_MULTIVERSION(FD_S(mse_chunk),
                (const void *ctx, int64_t t, int64_t off, int64_t len, double *acc),
                (ctx, t, off, len, acc))

/* defines fd_mse_fwd_bwd_f32 and fd_mse_fwd_bwd_f64 (FD_S appends the type suffix) */
int FD_S(fd_mse_fwd_bwd)(int64_t n, FD_T *dpred, const FD_T *pred, const FD_T *target,
                         double scale, double *loss_out)
{
    if (n < 0 || n > FD_MAX_ELEMS) return FD_ERR_SIZE;
    if (!loss_out || (n > 0 && (!dpred || !pred || !target))) return FD_ERR_NULL;
    if (!fd_aligned(loss_out, sizeof(double)) || !fd_aligned(dpred, sizeof(FD_T)) ||
        !fd_aligned(pred, sizeof(FD_T)) || !fd_aligned(target, sizeof(FD_T)))
        return FD_ERR_ALIGN;
    FD_REQUIRE(fd_finite(scale));
    if (n == 0) {
        *loss_out = 0.0;
        return FD_OK;
    }
    FD_S(mse_ctx) c = {dpred, pred, target, (FD_T)(2.0 * scale)};
    double acc[FD_MAX_CHUNKS * FD_ACC_WORDS];
    fd_run_chunks(1, &n, n, FD_PICK(FD_S(mse_chunk)), &c, acc);
    *loss_out = scale * loss_combine(acc, n);
    return FD_OK;
}

/* ---- softmax cross-entropy ---- */
FD_INLINE void FD_BODY(xent_chunk)(const void *ctx, int64_t t, int64_t off, int64_t len, double *acc)
{
    (void)t;
    const xent_ctx *c = (const xent_ctx *)ctx;
    const int64_t C = c->C;
    int64_t r0, r1;
    xent_rows(c, off, len, &r0, &r1);
    const FD_T sc = (FD_T)c->scale;
    double loss = 0.0;
    for (int64_t r = r0; r < r1; r++) {
        const FD_T *FD_RESTRICT l = (const FD_T *)c->logits + r * C;
        FD_T *FD_RESTRICT g = (FD_T *)c->dlogits + r * C;
        const int64_t y = c->labels[r];
        FD_T mx = l[0];
        for (int64_t j = 1; j < C; j++) mx = l[j] > mx ? l[j] : mx;
        double s = 0.0;
        for (int64_t j = 0; j < C; j++) s += (double)LOSS_EXP(l[j] - mx);
        loss += ((double)mx + log(s)) - (double)l[y];
        const FD_T inv = (FD_T)(1.0 / s);
        for (int64_t j = 0; j < C; j++) {
            FD_T p = LOSS_EXP(l[j] - mx) * inv;
            g[j] += sc * (j == y ? p - FD_ONE : p);
        }
    }
    acc[0] += loss;
}

FD_MULTIVERSION(FD_S(xent_chunk),
                (const void *ctx, int64_t t, int64_t off, int64_t len, double *acc),
                (ctx, t, off, len, acc))

/* defines fd_xent_fwd_bwd_f32 and fd_xent_fwd_bwd_f64 (FD_S appends the type suffix) */
int FD_S(fd_xent_fwd_bwd)(int64_t R, int64_t C, FD_T *dlogits, const FD_T *logits,
                          const int64_t *labels, double scale, double *loss_out)
{
    int64_t total;
    if (R < 0 || C < 0) return FD_ERR_SIZE;
    FD_CHECK(fd_mul_size(R, C, &total));
    if (!loss_out) return FD_ERR_NULL;
    if (!fd_aligned(loss_out, sizeof(double))) return FD_ERR_ALIGN;
    FD_REQUIRE(fd_finite(scale));
    if (R == 0) {
        *loss_out = 0.0;
        return FD_OK;
    }
    if (!labels || (C > 0 && (!dlogits || !logits))) return FD_ERR_NULL;
    if (!fd_aligned(labels, sizeof(int64_t)) || !fd_aligned(dlogits, sizeof(FD_T)) ||
        !fd_aligned(logits, sizeof(FD_T)))
        return FD_ERR_ALIGN;
    int bad = 0;
    for (int64_t r = 0; r < R; r++) bad |= (labels[r] < 0) | (labels[r] >= C);
    if (bad) return FD_ERR_ARG;
    xent_ctx c = {dlogits, logits, labels, R, C, scale};
    double acc[FD_MAX_CHUNKS * FD_ACC_WORDS];
    fd_chunk_fn fn = FD_PICK(FD_S(xent_chunk));
#if FD_X86_DISPATCH
    if (sizeof(FD_T) == 4 && fd_avx2_active()) fn = xent_chunk_f32_vec;
#endif
    fd_run_chunks(1, &total, total, fn, &c, acc);
    *loss_out = scale * loss_combine(acc, total);
    return FD_OK;
}

#undef LOSS_EXP

#endif /* FD_T */

/* fd_clip.c -- gradient clipping helpers: norm_pow_sum (reduction), scale, all_finite (reduction).
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements:
 *   norm_pow_sum: grad[i] read;    *out = sum |g|**norm_type (float64), or max |g| for norm_type = inf
 *   scale:        grad[i] written; g = g * factor (factor rounded once to T)
 *   all_finite:   grad[i] read;    *out = 1 if every element is finite, else 0
 *
 * Reductions are deterministic: the table is cut into fd_nchunks(total) fixed chunks (a function of
 * the table only), each chunk accumulates in float64 over 16 interleaved lanes in element order, and
 * the chunk partials are combined in chunk order; so the result is the same for any thread count.
 * norm_type 2 sums g*g and 1 sums |g| (both without pow); other finite orders use pow(|g|, p).
 * The inf-norm is NaN if any element is NaN (a max that skipped NaNs would hide them).
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

#define FD_LANES 16

enum { FD_NORM_SQ = 0, FD_NORM_ABS = 1, FD_NORM_INF = 2, FD_NORM_POW = 3 };

#define FD_TYPED_FILE "fd_clip.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *g; /* read-only for the reductions (cast from const on entry) */
    double p;
    FD_T factor;
    int mode;
} FD_S(clip_ctx);

/* acc[0] += sum over the piece of w(|x|), w by mode (not the inf-norm). */
FD_INLINE void FD_S(powsum_loop)(int64_t n, const FD_T *FD_RESTRICT x, double *acc, const int mode,
                                 double p)
{
    double l[FD_LANES] = {0};
    int64_t i = 0;
    for (; i + FD_LANES <= n; i += FD_LANES) {
        for (int k = 0; k < FD_LANES; k++) {
            double y = (double)x[i + k];
            if (mode == FD_NORM_SQ) l[k] += y * y;
            else if (mode == FD_NORM_ABS) l[k] += fabs(y);
            else l[k] += pow(fabs(y), p);
        }
    }
    for (int w = FD_LANES / 2; w >= 1; w /= 2) /* pairwise combine of the lanes, fixed order */
        for (int k = 0; k < w; k++) l[k] += l[k + w];
    double s = l[0];
    for (; i < n; i++) {
        double y = (double)x[i];
        if (mode == FD_NORM_SQ) s += y * y;
        else if (mode == FD_NORM_ABS) s += fabs(y);
        else s += pow(fabs(y), p);
    }
    acc[0] += s;
}

/* acc[0] = max(acc[0], max |x|), acc[1] = 1 if a NaN was seen. */
FD_INLINE void FD_S(absmax_loop)(int64_t n, const FD_T *FD_RESTRICT x, double *acc)
{
    FD_T mx[FD_LANES] = {0};
    int nan[FD_LANES] = {0};
    int64_t i = 0;
    for (; i + FD_LANES <= n; i += FD_LANES) {
        for (int k = 0; k < FD_LANES; k++) {
            FD_T a = FD_FABS(x[i + k]);
            mx[k] = a > mx[k] ? a : mx[k];
            nan[k] |= a != a;
        }
    }
    FD_T m = 0;
    int anynan = 0;
    for (int k = 0; k < FD_LANES; k++) {
        m = mx[k] > m ? mx[k] : m;
        anynan |= nan[k];
    }
    for (; i < n; i++) {
        FD_T a = FD_FABS(x[i]);
        m = a > m ? a : m;
        anynan |= a != a;
    }
    if ((double)m > acc[0]) acc[0] = (double)m;
    if (anynan) acc[1] = 1.0;
}

FD_INLINE void FD_BODY(norm_chunk)(const void *ctx, int64_t t, int64_t off, int64_t len, double *acc)
{
    const FD_S(clip_ctx) *c = (const FD_S(clip_ctx) *)ctx;
    const FD_T *x = c->g[t] + off;
    switch (c->mode) {
    case FD_NORM_SQ: FD_S(powsum_loop)(len, x, acc, FD_NORM_SQ, 2.0); break;
    case FD_NORM_ABS: FD_S(powsum_loop)(len, x, acc, FD_NORM_ABS, 1.0); break;
    case FD_NORM_INF: FD_S(absmax_loop)(len, x, acc); break;
    default: FD_S(powsum_loop)(len, x, acc, FD_NORM_POW, c->p); break;
    }
}

FD_MULTIVERSION(FD_S(norm_chunk), (const void *ctx, int64_t t, int64_t off, int64_t len, double *acc),
                (ctx, t, off, len, acc))

/* defines fd_norm_pow_sum_f32 and fd_norm_pow_sum_f64 (FD_S appends the type suffix) */
int FD_S(fd_norm_pow_sum)(int64_t ntensors, const int64_t *sizes, const FD_T *const *grad,
                          double norm_type, double *out)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(out, 1, sizeof(double)));
    if (!(norm_type > 0.0)) return FD_ERR_ARG; /* also NaN */

    FD_S(clip_ctx) c;
    c.g = (FD_T *const *)grad;
    c.p = norm_type;
    c.factor = 0;
    if (norm_type == 2.0) c.mode = FD_NORM_SQ;
    else if (norm_type == 1.0) c.mode = FD_NORM_ABS;
    else if (isinf(norm_type)) c.mode = FD_NORM_INF;
    else c.mode = FD_NORM_POW;

    double acc[FD_MAX_CHUNKS * FD_ACC_WORDS];
    int64_t nchunks = fd_nchunks(total);
    fd_run_chunks(ntensors, sizes, total, FD_PICK(FD_S(norm_chunk)), &c, acc);
    double r = 0.0;
    if (c.mode == FD_NORM_INF) {
        int anynan = 0;
        for (int64_t k = 0; k < nchunks; k++) {
            if (acc[k * FD_ACC_WORDS] > r) r = acc[k * FD_ACC_WORDS];
            anynan |= acc[k * FD_ACC_WORDS + 1] != 0.0;
        }
        if (anynan) r = NAN;
    } else {
        for (int64_t k = 0; k < nchunks; k++) r += acc[k * FD_ACC_WORDS];
    }
    *out = r;
    return FD_OK;
}

/* ---- scale */
FD_INLINE void FD_BODY(scale_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(clip_ctx) *c = (const FD_S(clip_ctx) *)ctx;
    FD_T *FD_RESTRICT x = c->g[t] + off;
    const FD_T f = c->factor;
    for (int64_t i = 0; i < len; i++) x[i] = x[i] * f;
}

FD_MULTIVERSION(FD_S(scale_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_scale_f32 and fd_scale_f64 (FD_S appends the type suffix) */
int FD_S(fd_scale)(int64_t ntensors, const int64_t *sizes, FD_T *const *grad, double factor)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_REQUIRE(fd_finite(factor));
    if (total == 0) return FD_OK;
    FD_S(clip_ctx) c;
    c.g = grad;
    c.p = 0.0;
    c.factor = (FD_T)factor;
    c.mode = 0;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_LIGHT, FD_PICK(FD_S(scale_seg)), &c);
    return FD_OK;
}

/* ---- all_finite: x - x is 0 for finite x and NaN for +-inf and NaN */
FD_INLINE void FD_BODY(finite_chunk)(const void *ctx, int64_t t, int64_t off, int64_t len,
                                     double *acc)
{
    const FD_S(clip_ctx) *c = (const FD_S(clip_ctx) *)ctx;
    const FD_T *FD_RESTRICT x = c->g[t] + off;
    int bad = 0;
    for (int64_t i = 0; i < len; i++) bad |= (x[i] - x[i]) != (FD_T)0;
    if (bad) acc[0] = 1.0;
}

FD_MULTIVERSION(FD_S(finite_chunk),
                (const void *ctx, int64_t t, int64_t off, int64_t len, double *acc),
                (ctx, t, off, len, acc))

/* defines fd_all_finite_f32 and fd_all_finite_f64 (FD_S appends the type suffix) */
int FD_S(fd_all_finite)(int64_t ntensors, const int64_t *sizes, const FD_T *const *grad, int *out)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(out, 1, sizeof(int)));
    FD_S(clip_ctx) c;
    c.g = (FD_T *const *)grad;
    c.p = 0.0;
    c.factor = 0;
    c.mode = 0;
    double acc[FD_MAX_CHUNKS * FD_ACC_WORDS];
    int64_t nchunks = fd_nchunks(total);
    fd_run_chunks(ntensors, sizes, total, FD_PICK(FD_S(finite_chunk)), &c, acc);
    int bad = 0;
    for (int64_t k = 0; k < nchunks; k++) bad |= acc[k * FD_ACC_WORDS] != 0.0;
    *out = !bad;
    return FD_OK;
}

#endif /* FD_T */

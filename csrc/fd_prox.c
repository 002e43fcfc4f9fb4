/* fd_prox.c -- the proximal L1 step (soft thresholding), run after an optimizer's update.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements:
 *   param[i]             written
 * Scalar (float64 in, rounded once to the element type T): threshold (= lr_in_force * l1, computed
 * by the rule: fastdescent.rules.Rule.prox_lr). Domain (FD_ERR_ARG otherwise): threshold finite, >= 0.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/prox.py):
 *   a = |p| - threshold
 *   p = a <= 0 ? +0 : copysign(a, p)               (= sign(p) * max(|p| - threshold, 0))
 * so an element whose magnitude is at most the threshold becomes exactly +0.0 (never -0.0, also for
 * p = -0.0), a NaN stays NaN (NaN <= 0 is false) and +-inf stays +-inf. (copysign(|p| - t, p) has
 * the bits of p - t for p > 0 and of p + t for p < 0.) Branch-free, so the loop vectorises.
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

#define FD_TYPED_FILE "fd_prox.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T thr;
} FD_S(prox_ctx);

FD_INLINE void FD_BODY(prox_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(prox_ctx) *c = (const FD_S(prox_ctx) *)ctx;
    FD_T *FD_RESTRICT x = c->p[t] + off;
    const FD_T thr = c->thr;
    for (int64_t i = 0; i < len; i++) {
        FD_T pi = x[i];
        FD_T a = FD_FABS(pi) - thr;
        x[i] = a <= 0 ? (FD_T)0 : FD_COPYSIGN(a, pi);
    }
}

FD_MULTIVERSION(FD_S(prox_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

int FD_S(fd_prox)(int64_t ntensors, const int64_t *sizes, FD_T *const *param, double threshold)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_REQUIRE(fd_nonneg(threshold));
    if (total == 0) return FD_OK;
    FD_S(prox_ctx) c;
    c.p = param;
    c.thr = (FD_T)threshold;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_LIGHT, FD_PICK(FD_S(prox_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

/* fd_rprop.c -- Rprop (resilient backpropagation, torch.optim.Rprop), one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], prev[i], step_size[i]    written
 *   grad[i]                            read
 * Scalars (float64 in, rounded once to the element type T): etaminus, etaplus, step_size_min,
 * step_size_max; flag maximize. Domain (FD_ERR_ARG otherwise, as optim.Rprop): 0 < etaminus < 1 <
 * etaplus, 0 <= step_size_min <= step_size_max, all finite.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/rprop.py), which is torch's
 * for-loop implementation step by step:
 *   g = maximize ? -g : g
 *   s = g * prev                                        (in T: an underflow to 0 counts as 0)
 *   f = s > 0 ? etaplus : s < 0 ? flip : 1              (torch: sign(s), sign(NaN) = 0, then
 *                                                        replaced by etaplus, etaminus, 1 in this
 *                                                        order: flip = etaminus, or 1 if etaminus
 *                                                        rounds to 0 in T)
 *   step_size = clamp(step_size * f, step_size_min, step_size_max)   (NaN stays NaN)
 *   g = f == etaminus ? 0 : g                           (compared in T, as torch)
 *   p = p - sign(g) * step_size                         (sign(x) = (x > 0) - (x < 0): 0 for +-0, NaN)
 *   prev = g
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

#define FD_TYPED_FILE "fd_rprop.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *prev;
    FD_T *const *ss;
    const FD_T *const *g;
    FD_T etam, etap, flip, smin, smax;
    int neg;
} FD_S(rprop_ctx);

FD_INLINE void FD_S(rprop_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT prev,
                                FD_T *FD_RESTRICT ss, const FD_T *FD_RESTRICT g,
                                const FD_S(rprop_ctx) *c, const int neg)
{
    const FD_T etam = c->etam, etap = c->etap, flip = c->flip, smin = c->smin, smax = c->smax;
    const FD_T zero = (FD_T)0;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = g[i];
        if (neg) gi = -gi;
        const FD_T s = gi * prev[i];
        const FD_T f = s > zero ? etap : (s < zero ? flip : FD_ONE);
        FD_T si = ss[i] * f;
        si = si < smin ? smin : si; /* two selects (x86 max, min): a NaN stays */
        si = si > smax ? smax : si;
        ss[i] = si;
        gi = f == etam ? zero : gi;
        const FD_T sg = (FD_T)(gi > zero) - (FD_T)(gi < zero);
        p[i] = p[i] - sg * si;
        prev[i] = gi;
    }
}

FD_INLINE void FD_BODY(rprop_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(rprop_ctx) *c = (const FD_S(rprop_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *prev = c->prev[t] + off, *ss = c->ss[t] + off;
    const FD_T *g = c->g[t] + off;
    if (c->neg) FD_S(rprop_loop)(len, p, prev, ss, g, c, 1);
    else FD_S(rprop_loop)(len, p, prev, ss, g, c, 0);
}

FD_MULTIVERSION(FD_S(rprop_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_rprop_f32 and fd_rprop_f64 (FD_S appends the type suffix) */
int FD_S(fd_rprop)(int64_t ntensors, const int64_t *sizes, FD_T *const *param, FD_T *const *prev,
                   FD_T *const *step_size, const FD_T *const *grad, double etaminus,
                   double etaplus, double step_size_min, double step_size_max, int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(prev), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(step_size), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_REQUIRE(etaminus > 0.0 && etaminus < 1.0);
    FD_REQUIRE(etaplus > 1.0 && fd_finite(etaplus));
    FD_REQUIRE(fd_nonneg(step_size_min) && fd_nonneg(step_size_max) &&
               step_size_min <= step_size_max);
    if (total == 0) return FD_OK;

    FD_S(rprop_ctx) c;
    c.p = param;
    c.prev = prev;
    c.ss = step_size;
    c.g = grad;
    c.etam = (FD_T)etaminus;
    c.etap = (FD_T)etaplus;
    /* the factor of a sign flip: etaminus, unless it rounds to 0 in T (torch then replaces it by 1
     * with the sign-0 elements: sign[sign.eq(0)] = 1 comes after sign[sign.lt(0)] = etaminus) */
    c.flip = c.etam == (FD_T)0 ? FD_ONE : c.etam;
    c.smin = (FD_T)step_size_min;
    c.smax = (FD_T)step_size_max;
    c.neg = maximize != 0;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(rprop_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

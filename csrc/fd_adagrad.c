/* fd_adagrad.c -- Adagrad, one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], sum[i]     written
 *   grad[i]              read
 * Scalars (float64 in, rounded once to the element type T): clr (= lr / (1 + (t-1)*lr_decay)), eps,
 * weight_decay; flag maximize. Domain (FD_ERR_ARG otherwise): clr, eps, weight_decay finite, >= 0.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/adagrad.py):
 *   g = maximize ? -g : g
 *   g = g + weight_decay * p                 (only if weight_decay != 0)
 *   s = s + g * g
 *   p = p - clr * (g / (sqrt(s) + eps))
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

#define FD_TYPED_FILE "fd_adagrad.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *s;
    const FD_T *const *g;
    FD_T gsign, clr, eps, wd;
    int wd_on;
} FD_S(adagrad_ctx);

FD_INLINE void FD_S(adagrad_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT s,
                                  const FD_T *FD_RESTRICT g, const FD_S(adagrad_ctx) *c,
                                  const int wd_on)
{
    const FD_T gs = c->gsign, clr = c->clr, eps = c->eps, wd = c->wd;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = g[i] * gs;
        FD_T pi = p[i];
        if (wd_on) gi = gi + wd * pi;
        FD_T si = s[i] + gi * gi;
        s[i] = si;
        p[i] = pi - clr * (gi / (FD_SQRT(si) + eps));
    }
}

FD_INLINE void FD_BODY(adagrad_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(adagrad_ctx) *c = (const FD_S(adagrad_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *s = c->s[t] + off;
    const FD_T *g = c->g[t] + off;
    if (c->wd_on) FD_S(adagrad_loop)(len, p, s, g, c, 1);
    else FD_S(adagrad_loop)(len, p, s, g, c, 0);
}

FD_MULTIVERSION(FD_S(adagrad_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_adagrad_f32 and fd_adagrad_f64 (FD_S appends the type suffix) */
int FD_S(fd_adagrad)(int64_t ntensors, const int64_t *sizes, FD_T *const *param, FD_T *const *sum,
                     const FD_T *const *grad, double clr, double eps, double weight_decay,
                     int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(sum), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_REQUIRE(fd_nonneg(clr) && fd_nonneg(eps) && fd_nonneg(weight_decay));
    if (total == 0) return FD_OK;

    FD_S(adagrad_ctx) c;
    c.p = param;
    c.s = sum;
    c.g = grad;
    c.gsign = maximize ? -FD_ONE : FD_ONE;
    c.clr = (FD_T)clr;
    c.eps = (FD_T)eps;
    c.wd = (FD_T)weight_decay;
    c.wd_on = weight_decay != 0.0;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(adagrad_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

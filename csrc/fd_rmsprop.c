/* fd_rmsprop.c -- RMSprop (plain or centered, with optional momentum), one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], square_avg[i]     written
 *   grad_avg[i]                 written (centered only; the column may be NULL otherwise)
 *   momentum_buffer[i]          written (momentum > 0 only; the column may be NULL otherwise)
 *   grad[i]                     read
 * Scalars (float64 in, rounded once to the element type T): lr, alpha, eps, weight_decay, momentum;
 * flags centered, maximize. Domain (FD_ERR_ARG otherwise, as optim.RMSprop): lr, alpha, eps,
 * weight_decay, momentum finite and >= 0 (alpha > 1 is accepted, as torch does).
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/rmsprop.py):
 *   g = maximize ? -g : g
 *   g = g + weight_decay * p                          (only if weight_decay != 0)
 *   v = v * alpha + ((1 - alpha) * g) * g
 *   centered: a = a * alpha + (1 - alpha) * g;  d = sqrt(v - a * a) + eps
 *   else:     d = sqrt(v) + eps
 *   momentum > 0: b = b * momentum + g / d;  p = p - lr * b
 *   else:         p = p - lr * (g / d)
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

/* The scalars' domain (optim.RMSprop's checks). */
static int fd_rmsprop_check_scalars(double lr, double alpha, double eps, double weight_decay,
                                    double momentum)
{
    FD_REQUIRE(fd_nonneg(lr) && fd_nonneg(alpha) && fd_nonneg(eps) && fd_nonneg(weight_decay) &&
               fd_nonneg(momentum));
    return FD_OK;
}

#define FD_TYPED_FILE "fd_rmsprop.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *v;
    FD_T *const *a;
    FD_T *const *b;
    const FD_T *const *g;
    FD_T gsign, lr, alpha, oma, eps, wd, mom;
    int mode; /* bit 0: weight decay, bit 1: centered, bit 2: momentum */
} FD_S(rmsprop_ctx);

FD_INLINE void FD_S(rmsprop_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT v,
                                  FD_T *FD_RESTRICT a, FD_T *FD_RESTRICT b,
                                  const FD_T *FD_RESTRICT g, const FD_S(rmsprop_ctx) *c,
                                  const int wd_on, const int centered, const int mom_on)
{
    const FD_S(fd_signmask) neg = c->gsign < 0 ? FD_S(FD_SIGNBIT) : 0;
    const FD_T lr = c->lr, alpha = c->alpha, oma = c->oma, eps = c->eps;
    const FD_T wd = c->wd, mom = c->mom;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = FD_S(fd_flip)(g[i], neg); /* maximize: -g */
        FD_T pi = p[i];
        if (wd_on) gi = gi + wd * pi;
        FD_T vi = v[i] * alpha + (oma * gi) * gi;
        v[i] = vi;
        FD_T d;
        if (centered) {
            FD_T ai = a[i] * alpha + oma * gi;
            a[i] = ai;
            d = FD_SQRT(vi - ai * ai) + eps;
        } else {
            d = FD_SQRT(vi) + eps;
        }
        if (mom_on) {
            FD_T bi = b[i] * mom + gi / d;
            b[i] = bi;
            p[i] = pi - lr * bi;
        } else {
            p[i] = pi - lr * (gi / d);
        }
    }
}

#define FD_RMSPROP_CASE(M)                                                                   \
    case M:                                                                                  \
        FD_S(rmsprop_loop)(len, p, v, a, b, g, c, (M) & 1, ((M) >> 1) & 1, ((M) >> 2) & 1); \
        break;

FD_INLINE void FD_BODY(rmsprop_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(rmsprop_ctx) *c = (const FD_S(rmsprop_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *v = c->v[t] + off;
    FD_T *a = (c->mode & 2) ? c->a[t] + off : NULL;
    FD_T *b = (c->mode & 4) ? c->b[t] + off : NULL;
    const FD_T *g = c->g[t] + off;
    switch (c->mode) {
        FD_RMSPROP_CASE(0) FD_RMSPROP_CASE(1) FD_RMSPROP_CASE(2) FD_RMSPROP_CASE(3)
        FD_RMSPROP_CASE(4) FD_RMSPROP_CASE(5) FD_RMSPROP_CASE(6) FD_RMSPROP_CASE(7)
    default: break; /* unreachable: mode has three bits */
    }
}
#undef FD_RMSPROP_CASE

/* The element-type scalars and mode of ctx c (everything but the column pointers). */
static void FD_S(rmsprop_fill)(FD_S(rmsprop_ctx) *c, double lr, double alpha, double eps,
                               double weight_decay, double momentum, int centered, int maximize)
{
    c->gsign = maximize ? -FD_ONE : FD_ONE;
    c->lr = (FD_T)lr;
    c->alpha = (FD_T)alpha;
    c->oma = (FD_T)(1.0 - alpha);
    c->eps = (FD_T)eps;
    c->wd = (FD_T)weight_decay;
    c->mom = (FD_T)momentum;
    c->mode = (weight_decay != 0.0) | ((centered != 0) << 1) | ((momentum > 0.0) << 2);
}

#if FD_IS_F32
/* The mixed-precision step's span (fd_internal.h): state columns square_avg, grad_avg (centered),
 * momentum_buffer (momentum > 0). */
#define FD_RMSPROP_SPAN_CASE(M)                                                                \
    case M:                                                                                    \
        rmsprop_loop_f32(n, p, s0, s1, s2, g, c, (M) & 1, ((M) >> 1) & 1, ((M) >> 2) & 1); \
        break;

FD_INLINE void rmsprop_span_body(const void *ctx, int64_t n, float *p, const float *g, float *s0,
                                 float *s1, float *s2)
{
    const rmsprop_ctx_f32 *c = (const rmsprop_ctx_f32 *)ctx;
    switch (c->mode) {
        FD_RMSPROP_SPAN_CASE(0) FD_RMSPROP_SPAN_CASE(1) FD_RMSPROP_SPAN_CASE(2)
        FD_RMSPROP_SPAN_CASE(3) FD_RMSPROP_SPAN_CASE(4) FD_RMSPROP_SPAN_CASE(5)
        FD_RMSPROP_SPAN_CASE(6) FD_RMSPROP_SPAN_CASE(7)
    default: break; /* unreachable: mode has three bits */
    }
}
#undef FD_RMSPROP_SPAN_CASE

FD_MULTIVERSION(rmsprop_span, (const void *ctx, int64_t n, float *p, const float *g, float *s0,
                               float *s1, float *s2), (ctx, n, p, g, s0, s1, s2))

/* sc: lr, alpha, eps, weight_decay, momentum, centered, maximize */
int fd_rmsprop_mixed_setup(const double *sc, int64_t nsc, fd_mixed_rule *r)
{
    FD_REQUIRE(nsc == 7);
    FD_CHECK(fd_rmsprop_check_scalars(sc[0], sc[1], sc[2], sc[3], sc[4]));
    _Static_assert(sizeof(rmsprop_ctx_f32) <= sizeof(r->ctx), "fd_mixed_rule.ctx too small");
    rmsprop_ctx_f32 *c = (rmsprop_ctx_f32 *)(void *)r->ctx.bytes;
    c->p = c->v = c->a = c->b = NULL;
    c->g = NULL;
    rmsprop_fill_f32(c, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5] != 0.0, sc[6] != 0.0);
    r->apply = FD_PICK(rmsprop_span);
    r->needs = 1u | ((c->mode & 2) ? 2u : 0u) | ((c->mode & 4) ? 4u : 0u);
    return FD_OK;
}
#endif

FD_MULTIVERSION(FD_S(rmsprop_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_rmsprop_f32 and fd_rmsprop_f64 (FD_S appends the type suffix) */
int FD_S(fd_rmsprop)(int64_t ntensors, const int64_t *sizes, FD_T *const *param,
                     FD_T *const *square_avg, FD_T *const *grad_avg, FD_T *const *momentum_buffer,
                     const FD_T *const *grad, double lr, double alpha, double eps,
                     double weight_decay, double momentum, int centered, int maximize)
{
    int64_t total;
    int mom_on = momentum > 0.0;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(square_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    if (centered) FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad_avg), sizeof(FD_T)));
    if (mom_on)
        FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(momentum_buffer), sizeof(FD_T)));
    FD_CHECK(fd_rmsprop_check_scalars(lr, alpha, eps, weight_decay, momentum));
    if (total == 0) return FD_OK;

    FD_S(rmsprop_ctx) c;
    c.p = param;
    c.v = square_avg;
    c.a = grad_avg;
    c.b = momentum_buffer;
    c.g = grad;
    FD_S(rmsprop_fill)(&c, lr, alpha, eps, weight_decay, momentum, centered, maximize);
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(rmsprop_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

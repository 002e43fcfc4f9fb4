/* fd_sgd.c -- SGD with coupled weight decay and (Nesterov) momentum, one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i]             written
 *   momentum_buffer[i]   written (only when momentum != 0; the column may be NULL otherwise)
 *   grad[i]              read
 * Scalars (float64 in, rounded once to the element type T): lr, momentum, dampening, weight_decay;
 * flags nesterov, maximize, first_step. Domain (FD_ERR_ARG otherwise, as optim.SGD): lr, momentum,
 * weight_decay finite and >= 0, dampening finite, nesterov only with momentum > 0, dampening == 0.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/sgd.py):
 *   g = maximize ? -g : g
 *   g = g + weight_decay * p                         (only if weight_decay != 0)
 *   if momentum != 0:
 *       b = first_step ? g : b * momentum + (1 - dampening) * g
 *       g = nesterov ? g + momentum * b : b
 *   p = p - lr * g
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

/* The scalars' domain (optim.SGD's checks); shared with fd_fused.c. */
int fd_sgd_check_scalars(double lr, double momentum, double dampening, double weight_decay,
                         int nesterov)
{
    FD_REQUIRE(fd_nonneg(lr) && fd_nonneg(momentum) && fd_finite(dampening) &&
               fd_nonneg(weight_decay));
    FD_REQUIRE(!nesterov || (momentum > 0.0 && dampening == 0.0));
    return FD_OK;
}

#define FD_TYPED_FILE "fd_sgd.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *b;
    const FD_T *const *g;
    FD_T gsign, lr, mom, omd, wd;
    int mode; /* bit 0: weight decay, bit 1: momentum, bit 2: nesterov, bit 3: first step */
} FD_S(sgd_ctx);

FD_INLINE void FD_S(sgd_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT b,
                              const FD_T *FD_RESTRICT g, const FD_S(sgd_ctx) *c, const int wd_on,
                              const int mom_on, const int nesterov, const int first)
{
    const FD_S(fd_signmask) neg = c->gsign < 0 ? FD_S(FD_SIGNBIT) : 0;
    const FD_T lr = c->lr, mom = c->mom, omd = c->omd, wd = c->wd;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = FD_S(fd_flip)(g[i], neg); /* maximize: -g */
        FD_T pi = p[i];
        if (wd_on) gi = gi + wd * pi;
        if (mom_on) {
            FD_T bi = first ? gi : b[i] * mom + omd * gi;
            b[i] = bi;
            gi = nesterov ? gi + mom * bi : bi;
        }
        p[i] = pi - lr * gi;
    }
}

#define FD_SGD_CASE(M)                                                                        \
    case M:                                                                                   \
        FD_S(sgd_loop)(len, p, b, g, c, (M) & 1, ((M) >> 1) & 1, ((M) >> 2) & 1, ((M) >> 3) & 1); \
        break;

FD_INLINE void FD_BODY(sgd_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(sgd_ctx) *c = (const FD_S(sgd_ctx) *)ctx;
    FD_T *p = c->p[t] + off;
    FD_T *b = (c->mode & 2) ? c->b[t] + off : NULL;
    const FD_T *g = c->g[t] + off;
    switch (c->mode) {
        FD_SGD_CASE(0) FD_SGD_CASE(1) FD_SGD_CASE(2) FD_SGD_CASE(3)
        FD_SGD_CASE(6) FD_SGD_CASE(7) FD_SGD_CASE(10) FD_SGD_CASE(11)
        FD_SGD_CASE(14) FD_SGD_CASE(15)
    default: break; /* unreachable: fd_sgd_* only builds the modes above */
    }
}
#undef FD_SGD_CASE

/* The element-type scalars and mode of ctx c (everything but the column pointers). */
static void FD_S(sgd_fill)(FD_S(sgd_ctx) *c, double lr, double momentum, double dampening,
                           double weight_decay, int nesterov, int maximize, int first_step)
{
    int mom_on = momentum != 0.0;
    c->gsign = maximize ? -FD_ONE : FD_ONE;
    c->lr = (FD_T)lr;
    c->mom = (FD_T)momentum;
    c->omd = (FD_T)(1.0 - dampening);
    c->wd = (FD_T)weight_decay;
    c->mode = (weight_decay != 0.0) | (mom_on << 1) | ((mom_on && nesterov) << 2) |
              ((mom_on && first_step) << 3);
}

#if FD_IS_F32
/* The mixed-precision step's span (fd_internal.h): state column momentum_buffer. */
#define FD_SGD_SPAN_CASE(M)                                                                     \
    case M:                                                                                     \
        sgd_loop_f32(n, p, s0, g, c, (M) & 1, ((M) >> 1) & 1, ((M) >> 2) & 1, ((M) >> 3) & 1); \
        break;

FD_INLINE void sgd_span_body(const void *ctx, int64_t n, float *p, const float *g, float *s0,
                             float *s1, float *s2)
{
    const sgd_ctx_f32 *c = (const sgd_ctx_f32 *)ctx;
    (void)s1;
    (void)s2;
    switch (c->mode) {
        FD_SGD_SPAN_CASE(0) FD_SGD_SPAN_CASE(1) FD_SGD_SPAN_CASE(2) FD_SGD_SPAN_CASE(3)
        FD_SGD_SPAN_CASE(6) FD_SGD_SPAN_CASE(7) FD_SGD_SPAN_CASE(10) FD_SGD_SPAN_CASE(11)
        FD_SGD_SPAN_CASE(14) FD_SGD_SPAN_CASE(15)
    default: break; /* unreachable: sgd_fill only builds the modes above */
    }
}
#undef FD_SGD_SPAN_CASE

FD_MULTIVERSION(sgd_span, (const void *ctx, int64_t n, float *p, const float *g, float *s0,
                           float *s1, float *s2), (ctx, n, p, g, s0, s1, s2))

/* sc: lr, momentum, dampening, weight_decay, nesterov, maximize, first_step */
int fd_sgd_mixed_setup(const double *sc, int64_t nsc, fd_mixed_rule *r)
{
    FD_REQUIRE(nsc == 7);
    FD_CHECK(fd_sgd_check_scalars(sc[0], sc[1], sc[2], sc[3], sc[4] != 0.0));
    _Static_assert(sizeof(sgd_ctx_f32) <= sizeof(r->ctx), "fd_mixed_rule.ctx too small");
    sgd_ctx_f32 *c = (sgd_ctx_f32 *)(void *)r->ctx.bytes;
    c->p = c->b = NULL;
    c->g = NULL;
    sgd_fill_f32(c, sc[0], sc[1], sc[2], sc[3], sc[4] != 0.0, sc[5] != 0.0, sc[6] != 0.0);
    r->apply = FD_PICK(sgd_span);
    r->needs = (c->mode & 2) ? 1u : 0u;
    return FD_OK;
}
#endif

FD_MULTIVERSION(FD_S(sgd_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_sgd_f32 and fd_sgd_f64 (FD_S appends the type suffix) */
int FD_S(fd_sgd)(int64_t ntensors, const int64_t *sizes, FD_T *const *param,
                 FD_T *const *momentum_buffer, const FD_T *const *grad, double lr, double momentum,
                 double dampening, double weight_decay, int nesterov, int maximize, int first_step)
{
    int64_t total;
    int mom_on = momentum != 0.0;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    if (mom_on)
        FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(momentum_buffer), sizeof(FD_T)));
    FD_CHECK(fd_sgd_check_scalars(lr, momentum, dampening, weight_decay, nesterov));
    if (total == 0) return FD_OK;

    FD_S(sgd_ctx) c;
    c.p = param;
    c.b = momentum_buffer;
    c.g = grad;
    FD_S(sgd_fill)(&c, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step);
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_LIGHT, FD_PICK(FD_S(sgd_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

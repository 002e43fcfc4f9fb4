/* fd_fused.c -- one training step of a stack of dense layers (forward, loss, backward, Adam/AdamW
 * update) in one call: what Sequential's kernel-by-kernel step does in ~8 Python->C calls plus
 * Optimizer.step, with the same kernels in the same order, so the results are bit-identical to it.
 *
 * Shapes (all C-contiguous, one element type T; R = rows of the minibatch):
 *   desc        (nlayers, 4) int64: per layer {type, in, out, kind}; type 0 = Linear (w (in, out),
 *               b (out) or NULL), type 1 = activation (in == out, kind 0 relu, 1 tanh, 2 sigmoid,
 *               3 gelu)
 *   w, b, dw, db   per-layer pointers (NULL for activations; b / db NULL for a Linear without bias)
 *   act, dact      per-layer outputs (R, out) and their gradients
 *   x (R, in of layer 0); labels (R,) int64 in [0, out) for loss_kind 0 (cross-entropy), target
 *   (R, out) for loss_kind 1 (mse); loss_scale = 1/R (xent) or 1/(R*out) (mse)
 *   param, exp_avg, exp_avg_sq, [max_exp_avg_sq], grad: the flat (nparams,) optimizer blocks; every
 *   dw / db lies inside grad, and w / b inside param (fd_mlp_step_sgd: param, [momentum_buffer],
 *   grad)
 *   dact_block (ndact,): the block holding every dact (zeroed together)
 *
 * Order (as Sequential._compile + Optimizer.step): grad = 0, dact_block = 0; forward (matmul_fwd /
 * act_fwd); loss + d loss/d output (xent_fwd_bwd / mse_fwd_bwd) into dact[last]; backward from the
 * last layer: Linear -> matmul_bwd_w (dw, db), then matmul_bwd_x into dact[i-1] if a parameter lies
 * before it; activation -> act_bwd into dact[i-1] if a parameter lies before it; then fd_adam on
 * the flat blocks with the given per-step scalars (computed in float64 by the caller); fd_mlp_step_sgd
 * runs the same step with fd_sgd (momentum SGD, as optim.SGD) as its update.
 *
 * Errors (nothing written): FD_ERR_SIZE (negative size, or a size / product above FD_MAX_ELEMS),
 * FD_ERR_NULL (missing array or loss_out), FD_ERR_ALIGN (a misaligned array), FD_ERR_SHAPE (layer
 * widths do not chain, or an activation with in != out), FD_ERR_ARG (unknown layer type, loss kind
 * or activation kind, a label out of range, a non-finite loss_scale, or Adam / SGD scalars outside
 * fd_adam's / fd_sgd's domain).
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include <stdint.h>
#include <string.h>

#include "fd_internal.h"


/* Everything that does not depend on the element type (but its size `es`), checked before anything
 * is written: sizes (and their products, so no multiplication below can overflow), pointers and
 * their alignment, kinds, labels. */
#define FUSED_ALIGNED(p) fd_aligned((p), es)
/* the optimizer state blocks a step needs (fused_check's `need`): m = exp_avg or momentum_buffer */
enum { NEED_M = 1u, NEED_V = 2u, NEED_VMAX = 4u };
static int fused_check(int64_t nlayers, const int64_t *desc, const void *const *w,
                       const void *const *b, const void *const *dw, const void *const *db,
                       const void *const *act, const void *const *dact, int64_t rows, const void *x,
                       int loss_kind, const int64_t *labels, const void *target, int64_t nparams,
                       const void *param, const void *m, const void *v, const void *vmax,
                       const void *grad, const void *dact_block, int64_t ndact, unsigned need,
                       const double *loss_out, size_t es)
{
    int64_t t;
    if (nlayers <= 0 || rows <= 0 || nparams < 0 || ndact < 0) return FD_ERR_SIZE;
    if (nlayers > FD_MAX_ELEMS / 4 || nparams > FD_MAX_ELEMS || ndact > FD_MAX_ELEMS)
        return FD_ERR_SIZE;
    if (!desc || !w || !b || !dw || !db || !act || !dact || !x || !loss_out || !dact_block)
        return FD_ERR_NULL;
    if (nparams > 0 && (!param || !grad || ((need & NEED_M) && !m) || ((need & NEED_V) && !v) ||
                        ((need & NEED_VMAX) && !vmax)))
        return FD_ERR_NULL;
    if (!fd_aligned(desc, sizeof(int64_t)) || !fd_aligned(loss_out, sizeof(double)) ||
        !fd_aligned(w, sizeof(void *)) || !fd_aligned(b, sizeof(void *)) ||
        !fd_aligned(dw, sizeof(void *)) || !fd_aligned(db, sizeof(void *)) ||
        !fd_aligned(act, sizeof(void *)) || !fd_aligned(dact, sizeof(void *)))
        return FD_ERR_ALIGN;
    if (!FUSED_ALIGNED(x) || !FUSED_ALIGNED(target) || !FUSED_ALIGNED(param) ||
        !FUSED_ALIGNED(m) || !FUSED_ALIGNED(v) || !FUSED_ALIGNED(vmax) || !FUSED_ALIGNED(grad) ||
        !FUSED_ALIGNED(dact_block))
        return FD_ERR_ALIGN;
    int64_t width = desc[1];
    for (int64_t i = 0; i < nlayers; i++) {
        const int64_t *d = desc + 4 * i;
        if (d[1] < 0 || d[2] < 0) return FD_ERR_SIZE;
        if (d[1] != width) return FD_ERR_SHAPE;
        FD_CHECK(fd_mul_size(rows, d[1], &t));
        FD_CHECK(fd_mul_size(rows, d[2], &t));
        FD_CHECK(fd_mul_size(d[1], d[2], &t));
        if (!act[i] || !dact[i]) return FD_ERR_NULL;
        if (!FUSED_ALIGNED(act[i]) || !FUSED_ALIGNED(dact[i])) return FD_ERR_ALIGN;
        if (d[0] == FD_LAYER_LINEAR) {
            if (t > 0 && (!w[i] || !dw[i])) return FD_ERR_NULL;
            if (!FUSED_ALIGNED(w[i]) || !FUSED_ALIGNED(dw[i]) || !FUSED_ALIGNED(b[i]) ||
                !FUSED_ALIGNED(db[i]))
                return FD_ERR_ALIGN;
        } else if (d[0] == FD_LAYER_ACT) {
            if (d[2] != d[1]) return FD_ERR_SHAPE;
            if (d[3] < 0 || d[3] > 3) return FD_ERR_ARG;
        } else {
            return FD_ERR_ARG;
        }
        width = d[2];
    }
    if (loss_kind == FD_LOSS_XENT) {
        if (!labels) return FD_ERR_NULL;
        if (!fd_aligned(labels, sizeof(int64_t))) return FD_ERR_ALIGN;
        int bad = 0;
        for (int64_t r = 0; r < rows; r++) bad |= (labels[r] < 0) | (labels[r] >= width);
        if (bad) return FD_ERR_ARG;
    } else if (loss_kind == FD_LOSS_MSE) {
        if (!target) return FD_ERR_NULL;
    } else {
        return FD_ERR_ARG;
    }
    return FD_OK;
}
#undef FUSED_ALIGNED

#define FD_TYPED_FILE "fd_fused.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

/* Everything of the step but the update, after the checks: grad = 0, dact_block = 0, forward, loss
 * (into *loss_out), backward. Shared by fd_mlp_step and fd_mlp_step_sgd. */
static int FD_S(mlp_fwd_bwd)(int64_t L, const int64_t *desc, FD_T *const *w, FD_T *const *b,
                             FD_T *const *dw, FD_T *const *db, FD_T *const *act,
                             FD_T *const *dact, int64_t rows, const FD_T *x, int loss_kind,
                             const int64_t *labels, const FD_T *target, double loss_scale,
                             int64_t nparams, FD_T *grad, FD_T *dact_block, int64_t ndact,
                             double *loss_out)
{
    if (nparams > 0) memset(grad, 0, (size_t)nparams * sizeof(FD_T));
    if (ndact > 0) memset(dact_block, 0, (size_t)ndact * sizeof(FD_T));

    /* forward */
    const FD_T *in = x;
    for (int64_t i = 0; i < L; i++) {
        const int64_t *d = desc + 4 * i;
        if (d[0] == FD_LAYER_LINEAR)
            FD_CHECK(FD_S(fd_matmul_fwd)(1, 1, rows, d[1], d[2], act[i], in, w[i], b[i]));
        else
            FD_CHECK(FD_S(fd_act_fwd)(rows * d[1], act[i], in, (int)d[3]));
        in = act[i];
    }

    /* loss and d loss / d output */
    const int64_t nout = desc[4 * (L - 1) + 2];
    double loss = 0.0;
    if (loss_kind == FD_LOSS_XENT)
        FD_CHECK(FD_S(fd_xent_fwd_bwd)(rows, nout, dact[L - 1], act[L - 1], labels, loss_scale, &loss));
    else
        FD_CHECK(FD_S(fd_mse_fwd_bwd)(rows * nout, dact[L - 1], act[L - 1], target, loss_scale, &loss));

    /* backward: dact[i-1] is needed only if a parameter lies before layer i */
    int64_t first_linear = L;
    for (int64_t i = 0; i < L; i++) {
        if (desc[4 * i] == FD_LAYER_LINEAR) {
            first_linear = i;
            break;
        }
    }
    for (int64_t i = L - 1; i >= 0; i--) {
        const int64_t *d = desc + 4 * i;
        const int need_dx = i > 0 && first_linear < i;
        if (d[0] == FD_LAYER_LINEAR) {
            const FD_T *xin = i == 0 ? x : act[i - 1];
            FD_CHECK(FD_S(fd_matmul_bwd_w)(1, 1, rows, d[1], d[2], dw[i], db[i], xin, dact[i]));
            if (need_dx) FD_CHECK(FD_S(fd_matmul_bwd_x)(1, 1, rows, d[1], d[2], dact[i - 1], dact[i], w[i]));
        } else if (need_dx) {
            FD_CHECK(FD_S(fd_act_bwd)(rows * d[1], dact[i - 1], dact[i], act[i - 1], act[i], (int)d[3]));
        }
    }
    *loss_out = loss;
    return FD_OK;
}

/* defines fd_mlp_step_f32 and fd_mlp_step_f64 (FD_S appends the type suffix) */
int FD_S(fd_mlp_step)(int64_t nlayers, const int64_t *desc, FD_T *const *w, FD_T *const *b,
                      FD_T *const *dw, FD_T *const *db, FD_T *const *act, FD_T *const *dact,
                      int64_t rows, const FD_T *x, int loss_kind, const int64_t *labels,
                      const FD_T *target, double loss_scale, int64_t nparams, FD_T *param,
                      FD_T *exp_avg, FD_T *exp_avg_sq, FD_T *max_exp_avg_sq, FD_T *grad,
                      FD_T *dact_block, int64_t ndact, double beta1, double beta2, double eps,
                      double weight_decay, double decay, double step_size,
                      double bias_correction2_sqrt, int amsgrad, int maximize, double *loss_out)
{
    FD_FLUSH_SCOPE(flush); /* the element-wise work done here, on the calling thread */
    FD_CHECK(fused_check(nlayers, desc, (const void *const *)w, (const void *const *)b,
                         (const void *const *)dw, (const void *const *)db,
                         (const void *const *)act, (const void *const *)dact, rows, x, loss_kind,
                         labels, target, nparams, param, exp_avg, exp_avg_sq, max_exp_avg_sq, grad,
                         dact_block, ndact, NEED_M | NEED_V | (amsgrad ? NEED_VMAX : 0u), loss_out,
                         sizeof(FD_T)));
    FD_REQUIRE(fd_finite(loss_scale));
    FD_CHECK(fd_adam_check_scalars(beta1, beta2, eps, weight_decay, decay, step_size,
                                   bias_correction2_sqrt));
    double loss;
    FD_CHECK(FD_S(mlp_fwd_bwd)(nlayers, desc, w, b, dw, db, act, dact, rows, x, loss_kind, labels,
                               target, loss_scale, nparams, grad, dact_block, ndact, &loss));

    /* optimizer update over the flat blocks */
    if (nparams > 0) {
        const int64_t sizes[1] = {nparams};
        FD_T *pp[1] = {param}, *mp[1] = {exp_avg}, *vp[1] = {exp_avg_sq}, *wp[1] = {max_exp_avg_sq};
        const FD_T *gp[1] = {grad};
        FD_CHECK(FD_S(fd_adam)(1, sizes, pp, mp, vp, amsgrad ? wp : NULL, gp, beta1, beta2, eps,
                               weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad,
                               maximize));
    }
    *loss_out = loss;
    return FD_OK;
}

/* defines fd_mlp_step_sgd_f32 and fd_mlp_step_sgd_f64: the same step with fd_sgd as the update
 * (momentum_buffer may be NULL iff momentum == 0) */
int FD_S(fd_mlp_step_sgd)(int64_t nlayers, const int64_t *desc, FD_T *const *w, FD_T *const *b,
                          FD_T *const *dw, FD_T *const *db, FD_T *const *act, FD_T *const *dact,
                          int64_t rows, const FD_T *x, int loss_kind, const int64_t *labels,
                          const FD_T *target, double loss_scale, int64_t nparams, FD_T *param,
                          FD_T *momentum_buffer, FD_T *grad, FD_T *dact_block, int64_t ndact,
                          double lr, double momentum, double dampening, double weight_decay,
                          int nesterov, int maximize, int first_step, double *loss_out)
{
    FD_FLUSH_SCOPE(flush); /* the element-wise work done here, on the calling thread */
    FD_CHECK(fused_check(nlayers, desc, (const void *const *)w, (const void *const *)b,
                         (const void *const *)dw, (const void *const *)db,
                         (const void *const *)act, (const void *const *)dact, rows, x, loss_kind,
                         labels, target, nparams, param, momentum_buffer, NULL, NULL, grad,
                         dact_block, ndact, momentum != 0.0 ? NEED_M : 0u, loss_out, sizeof(FD_T)));
    FD_REQUIRE(fd_finite(loss_scale));
    FD_CHECK(fd_sgd_check_scalars(lr, momentum, dampening, weight_decay, nesterov));
    double loss;
    FD_CHECK(FD_S(mlp_fwd_bwd)(nlayers, desc, w, b, dw, db, act, dact, rows, x, loss_kind, labels,
                               target, loss_scale, nparams, grad, dact_block, ndact, &loss));

    /* optimizer update over the flat blocks */
    if (nparams > 0) {
        const int64_t sizes[1] = {nparams};
        FD_T *pp[1] = {param}, *bp[1] = {momentum_buffer};
        const FD_T *gp[1] = {grad};
        FD_CHECK(FD_S(fd_sgd)(1, sizes, pp, momentum != 0.0 ? bp : NULL, gp, lr, momentum,
                              dampening, weight_decay, nesterov, maximize, first_step));
    }
    *loss_out = loss;
    return FD_OK;
}

#endif /* FD_T */

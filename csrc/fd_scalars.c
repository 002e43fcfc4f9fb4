/* fd_scalars.c -- the per-step kernel scalars of every optimizer, derived from its hyperparameters
 * and the step count exactly as the Python layer derives them (fastdescent/rules/<name>.py,
 * Rule.scalars).
 *
 * Bit-for-bit agreement with Python rests on three things:
 * - the same float64 operations in the same order: Python evaluates a * b / c * d left to right, as
 *   C does, and every expression below is written with Python's grouping;
 * - the same functions: Python's float ** float (and float ** int, the int converted to a double
 *   first) calls the C library's pow() for the finite, non-negative bases used here, x ** 0.5
 *   included (so pow(x, 0.5) below, not sqrt), and math.sqrt calls sqrt() (correctly rounded, also
 *   when the compiler inlines it);
 * - no multiply-add contraction (FD_EXACT_FP): Python rounds every product before a sum.
 * (On x87 FPUs with excess precision, i386 without SSE2, the results may differ in the last bit.)
 *
 * Each helper validates everything first (the domains of fastdescent.optim's checks), computes into
 * a local struct, refuses a result with a non-finite scalar (the Python layer's check_scalars), and
 * only then writes *out.
 */
#include "fd_internal.h"

FD_EXACT_FP

static int fd_flag(int f) { return f == 0 || f == 1; }

/* 0 <= x < 1, finite (betas, as check_betas) */
static int fd_beta(double x) { return fd_unit(x); }

/* 1 - b**t with t = (double)step: Python's 1.0 - beta ** step (float ** int converts the int). */
static double fd_bias_correction(double b, int64_t step) { return 1.0 - pow(b, (double)step); }

#define FD_CHECK_COMMON(hp, step, out)     \
    do {                                   \
        if ((hp) == NULL || (out) == NULL) \
            return FD_ERR_NULL;            \
        FD_REQUIRE((step) >= 1);           \
    } while (0)

/* ------------------------------------------------------------------------------------------ SGD */
int fd_sgd_scalars(const fd_sgd_hparams_t *hp, int64_t step, int first, fd_sgd_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_nonneg(hp->momentum) && fd_finite(hp->dampening) &&
           fd_nonneg(hp->weight_decay) && fd_nonneg(hp->noise_std) && fd_nonneg(hp->noise_decay));
    FD_REQUIRE(fd_flag(hp->nesterov) && fd_flag(hp->maximize) && fd_flag(first));
    FD_REQUIRE(!hp->nesterov || (hp->momentum > 0.0 && hp->dampening == 0.0));
    fd_sgd_scalars_t s;
    s.lr = hp->lr;
    s.momentum = hp->momentum;
    s.dampening = hp->dampening;
    s.weight_decay = hp->weight_decay;
    s.nesterov = hp->nesterov;
    s.maximize = hp->maximize;
    s.first_step = first;
    /* rules/sgd.py noise_sigma: std * float(step) ** -float(noise_decay), 0 without noise */
    s.noise_sigma = hp->noise_std == 0.0 ? 0.0 : hp->noise_std * pow((double)step, -hp->noise_decay);
    FD_REQUIRE(fd_finite(s.noise_sigma));
    *out = s;
    return FD_OK;
}

/* ---------------------------------------------------------------------------------- Adam, AdamW */
int fd_adam_scalars(const fd_adam_hparams_t *hp, int64_t step, fd_adam_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_beta(hp->beta1) && fd_beta(hp->beta2) && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay));
    FD_REQUIRE(fd_flag(hp->amsgrad) && fd_flag(hp->maximize) && fd_flag(hp->decoupled_weight_decay));
    const double bc1 = fd_bias_correction(hp->beta1, step);
    const double bc2 = fd_bias_correction(hp->beta2, step);
    fd_adam_scalars_t s;
    s.beta1 = hp->beta1;
    s.beta2 = hp->beta2;
    s.eps = hp->eps;
    s.weight_decay = hp->decoupled_weight_decay ? 0.0 : hp->weight_decay;
    s.decay = hp->decoupled_weight_decay ? 1.0 - hp->lr * hp->weight_decay : 1.0;
    s.step_size = hp->lr / bc1;
    s.bias_correction2_sqrt = sqrt(bc2);
    s.amsgrad = hp->amsgrad;
    s.maximize = hp->maximize;
    FD_REQUIRE(fd_finite(s.decay) && fd_finite(s.step_size) && fd_finite(s.bias_correction2_sqrt));
    *out = s;
    return FD_OK;
}

/* -------------------------------------------------------------------------------------- RMSprop */
int fd_rmsprop_scalars(const fd_rmsprop_hparams_t *hp, int64_t step, fd_rmsprop_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_nonneg(hp->alpha) && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay) && fd_nonneg(hp->momentum));
    FD_REQUIRE(fd_flag(hp->centered) && fd_flag(hp->maximize));
    fd_rmsprop_scalars_t s;
    s.lr = hp->lr;
    s.alpha = hp->alpha;
    s.eps = hp->eps;
    s.weight_decay = hp->weight_decay;
    s.momentum = hp->momentum;
    s.centered = hp->centered;
    s.maximize = hp->maximize;
    *out = s;
    return FD_OK;
}

/* -------------------------------------------------------------------------------------- Adagrad */
int fd_adagrad_scalars(const fd_adagrad_hparams_t *hp, int64_t step, fd_adagrad_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_nonneg(hp->lr_decay) && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay));
    FD_REQUIRE(fd_flag(hp->maximize));
    fd_adagrad_scalars_t s;
    /* rules/adagrad.py prox_lr: lr / (1.0 + (step - 1) * lr_decay), the int converted first */
    s.clr = hp->lr / (1.0 + (double)(step - 1) * hp->lr_decay);
    s.eps = hp->eps;
    s.weight_decay = hp->weight_decay;
    s.maximize = hp->maximize;
    FD_REQUIRE(fd_finite(s.clr));
    *out = s;
    return FD_OK;
}

/* ----------------------------------------------------------------------------------------- Lion */
int fd_lion_scalars(const fd_lion_hparams_t *hp, int64_t step, fd_lion_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_beta(hp->beta1) && fd_beta(hp->beta2) &&
           fd_nonneg(hp->weight_decay));
    FD_REQUIRE(fd_flag(hp->maximize));
    fd_lion_scalars_t s;
    s.lr = hp->lr;
    s.beta1 = hp->beta1;
    s.one_minus_beta1 = 1.0 - hp->beta1;
    s.beta2 = hp->beta2;
    s.one_minus_beta2 = 1.0 - hp->beta2;
    s.decay = 1.0 - hp->lr * hp->weight_decay;
    s.maximize = hp->maximize;
    FD_REQUIRE(fd_finite(s.decay));
    *out = s;
    return FD_OK;
}

/* ----------------------------------------------------------------------------------------- LAMB */
int fd_lamb_scalars(const fd_lamb_hparams_t *hp, int64_t step, fd_lamb_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_beta(hp->beta1) && fd_beta(hp->beta2) && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay));
    FD_REQUIRE(fd_flag(hp->bias_correction) && fd_flag(hp->maximize));
    fd_lamb_scalars_t s;
    s.lr = hp->lr;
    s.beta1 = hp->beta1;
    s.one_minus_beta1 = 1.0 - hp->beta1;
    s.beta2 = hp->beta2;
    s.one_minus_beta2 = 1.0 - hp->beta2;
    s.eps = hp->eps;
    s.weight_decay = hp->weight_decay;
    if (hp->bias_correction) {
        s.inv_bias_correction1 = 1.0 / fd_bias_correction(hp->beta1, step);
        s.inv_bias_correction2 = 1.0 / fd_bias_correction(hp->beta2, step);
    } else {
        s.inv_bias_correction1 = s.inv_bias_correction2 = 1.0;
    }
    s.maximize = hp->maximize;
    FD_REQUIRE(fd_finite(s.inv_bias_correction1) && fd_finite(s.inv_bias_correction2));
    *out = s;
    return FD_OK;
}

/* ---------------------------------------------------------------------------------------- Rprop */
int fd_rprop_scalars(const fd_rprop_hparams_t *hp, int64_t step, fd_rprop_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr));
    FD_REQUIRE(hp->etaminus > 0.0 && hp->etaminus < 1.0 && hp->etaplus > 1.0 && fd_finite(hp->etaplus));
    FD_REQUIRE(fd_nonneg(hp->step_size_min) && fd_nonneg(hp->step_size_max) &&
           hp->step_size_min <= hp->step_size_max);
    FD_REQUIRE(fd_flag(hp->maximize));
    fd_rprop_scalars_t s;
    s.etaminus = hp->etaminus;
    s.etaplus = hp->etaplus;
    s.step_size_min = hp->step_size_min;
    s.step_size_max = hp->step_size_max;
    s.maximize = hp->maximize;
    *out = s;
    return FD_OK;
}

/* --------------------------------------------------------------------------------------- Adamax */
int fd_adamax_scalars(const fd_adamax_hparams_t *hp, int64_t step, fd_adamax_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_beta(hp->beta1) && fd_beta(hp->beta2) && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay));
    FD_REQUIRE(fd_flag(hp->maximize));
    const double w = 1.0 - hp->beta1;
    const int small = fabs(w) < 0.5; /* torch's is_lerp_weight_small */
    fd_adamax_scalars_t s;
    s.lerp_weight = small ? w : w - 1.0;
    s.lerp_from_grad = small ? 0 : 1;
    s.beta2 = hp->beta2;
    s.eps = hp->eps;
    s.weight_decay = hp->weight_decay;
    s.clr = hp->lr / fd_bias_correction(hp->beta1, step);
    s.maximize = hp->maximize;
    FD_REQUIRE(fd_finite(s.clr));
    *out = s;
    return FD_OK;
}

/* ------------------------------------------------------------------------------------- Adadelta */
int fd_adadelta_scalars(const fd_adadelta_hparams_t *hp, int64_t step, fd_adadelta_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && hp->rho >= 0.0 && hp->rho <= 1.0 && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay));
    FD_REQUIRE(fd_flag(hp->maximize));
    fd_adadelta_scalars_t s;
    s.lr = hp->lr;
    s.rho = hp->rho;
    s.one_minus_rho = 1.0 - hp->rho;
    s.eps = hp->eps;
    s.weight_decay = hp->weight_decay;
    s.maximize = hp->maximize;
    *out = s;
    return FD_OK;
}

/* ---------------------------------------------------------------------------------- NAdam, NAdamW */
int fd_nadam_scalars(const fd_nadam_hparams_t *hp, int64_t step, double mu_product,
                     fd_nadam_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_beta(hp->beta1) && fd_beta(hp->beta2) && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay) && fd_nonneg(hp->momentum_decay));
    FD_REQUIRE(fd_flag(hp->decoupled_weight_decay) && fd_flag(hp->maximize));
    FD_REQUIRE(mu_product >= 0.0 && mu_product <= 1.0);
    /* rules/nadam.py _mus: mu_t and mu_{t+1}, t = float(step) */
    const double t = (double)step, psi = hp->momentum_decay;
    const double mu = hp->beta1 * (1.0 - 0.5 * pow(0.96, t * psi));
    const double mu_next = hp->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * psi));
    const double prod = mu_product * mu;
    const double prod_next = prod * mu_next;
    const double sqrt_bc2 = sqrt(1.0 - pow(hp->beta2, t));
    const double lr = hp->lr, wd = hp->weight_decay;
    fd_nadam_scalars_t s;
    s.beta1 = hp->beta1;
    s.one_minus_beta1 = 1.0 - hp->beta1;
    s.beta2 = hp->beta2;
    s.one_minus_beta2 = 1.0 - hp->beta2;
    s.weight_decay = hp->decoupled_weight_decay ? 0.0 : wd;
    s.decay = hp->decoupled_weight_decay ? 1.0 - lr * wd : 1.0;
    s.step_size_grad = lr * (1.0 - mu) / (1.0 - prod) * sqrt_bc2;
    s.step_size_exp_avg = lr * mu_next / (1.0 - prod_next) * sqrt_bc2;
    s.eps_scaled = hp->eps * sqrt_bc2;
    s.maximize = hp->maximize;
    s.mu_product = prod;
    FD_REQUIRE(fd_finite(s.decay) && fd_finite(s.step_size_grad) && fd_finite(s.step_size_exp_avg) &&
           fd_finite(s.eps_scaled));
    *out = s;
    return FD_OK;
}

/* ---------------------------------------------------------------------------------- RAdam, RAdamW */
int fd_radam_scalars(const fd_radam_hparams_t *hp, int64_t step, fd_radam_scalars_t *out)
{
    FD_CHECK_COMMON(hp, step, out);
    FD_REQUIRE(fd_nonneg(hp->lr) && fd_beta(hp->beta1) && fd_beta(hp->beta2) && fd_nonneg(hp->eps) &&
           fd_nonneg(hp->weight_decay));
    FD_REQUIRE(fd_flag(hp->decoupled_weight_decay) && fd_flag(hp->maximize));
    const double t = (double)step, beta2 = hp->beta2, lr = hp->lr, wd = hp->weight_decay;
    const double bc1 = 1.0 - pow(hp->beta1, t);
    /* rules/radam.py rectification(beta2, step) */
    const double bc2 = 1.0 - pow(beta2, t);
    const double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * pow(beta2, t) / bc2;
    fd_radam_scalars_t s;
    if (!(rho_t > 5.0)) {
        s.rectify = 0;
        s.step_size = lr / bc1;
    } else {
        const double rect = pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                    ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t),
                                0.5);
        s.rectify = 1;
        s.step_size = lr * rect * sqrt(1.0 - pow(beta2, t)) / bc1;
    }
    s.beta1 = hp->beta1;
    s.one_minus_beta1 = 1.0 - hp->beta1;
    s.beta2 = beta2;
    s.one_minus_beta2 = 1.0 - beta2;
    s.eps = hp->eps;
    s.weight_decay = hp->decoupled_weight_decay ? 0.0 : wd;
    s.decay = hp->decoupled_weight_decay ? 1.0 - lr * wd : 1.0;
    s.maximize = hp->maximize;
    FD_REQUIRE(fd_finite(s.decay) && fd_finite(s.step_size));
    *out = s;
    return FD_OK;
}

/* train_adam.c -- embedding libfastdescent: AdamW on two float32 tensors, in plain C.
 *
 * Fits w (3 values) and b (5 values) to fixed targets by minimising sum((p - target)^2), whose
 * gradient is 2 * (p - target). Each step is two calls: fd_adam_scalars derives the step's scalars
 * (bias corrections, step size, decay factor) from the hyperparameters and the step number, exactly
 * as fastdescent.optim.AdamW does, and fd_adam_f32 updates both tensors in one fused call.
 *
 * Build and run against an installed library (make -C csrc install PREFIX=...):
 *     cc train_adam.c $(pkg-config --cflags --libs fastdescent) -o train_adam && ./train_adam
 * Prints the library version, the final loss and every parameter (%.9g: float32 round trip).
 */
#include <fastdescent.h>
#include <stdio.h>
#include <string.h>

#define STEPS 200

static double loss_and_grad(int64_t n, const float *p, const float *target, float *grad)
{
    double loss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float d = p[i] - target[i];
        grad[i] = 2.0f * d;
        loss += (double)d * d;
    }
    return loss;
}

int main(void)
{
    /* the header this was compiled with and the library it runs with must be the same version */
    if (strcmp(fd_version(), FASTDESCENT_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", FASTDESCENT_VERSION_STRING, fd_version());
        return 1;
    }
    printf("fastdescent %s (header %d.%d.%d)\n", fd_version(), FASTDESCENT_VERSION_MAJOR,
           FASTDESCENT_VERSION_MINOR, FASTDESCENT_VERSION_PATCH);

    /* a table of two tensors: parameters, Adam's two moments, gradients */
    float w[3] = {0.5f, -1.0f, 2.0f}, b[5] = {0.0f, 0.25f, -0.75f, 1.5f, 3.0f};
    const float w_target[3] = {1.0f, 2.0f, -3.0f}, b_target[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    float w_m[3] = {0}, w_v[3] = {0}, b_m[5] = {0}, b_v[5] = {0}, w_g[3], b_g[5];
    int64_t sizes[2] = {3, 5};
    float *param[2] = {w, b}, *exp_avg[2] = {w_m, b_m}, *exp_avg_sq[2] = {w_v, b_v};
    const float *grad[2] = {w_g, b_g};

    /* AdamW: torch.optim.AdamW(lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01) */
    fd_adam_hparams_t hp = {.lr = 0.05, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                            .weight_decay = 0.01, .amsgrad = 0, .maximize = 0,
                            .decoupled_weight_decay = 1};
    double loss = 0.0;
    for (int64_t t = 1; t <= STEPS; t++) {
        loss = loss_and_grad(3, w, w_target, w_g) + loss_and_grad(5, b, b_target, b_g);
        fd_adam_scalars_t s;
        int rc = fd_adam_scalars(&hp, t, &s);
        if (rc == FD_OK)
            rc = fd_adam_f32(2, sizes, param, exp_avg, exp_avg_sq, NULL, grad, s.beta1, s.beta2,
                             s.eps, s.weight_decay, s.decay, s.step_size, s.bias_correction2_sqrt,
                             s.amsgrad, s.maximize);
        if (rc != FD_OK) {
            fprintf(stderr, "step %lld: %s\n", (long long)t, fd_strerror(rc));
            return 1;
        }
    }
    printf("loss before step %d: %.6g\n", STEPS, loss);
    for (int i = 0; i < 3; i++) printf("w[%d] = %.9g\n", i, w[i]);
    for (int i = 0; i < 5; i++) printf("b[%d] = %.9g\n", i, b[i]);

    /* bad hyperparameters are refused before anything is computed */
    hp.beta1 = 1.0;
    fd_adam_scalars_t s;
    int rc = fd_adam_scalars(&hp, 1, &s);
    printf("beta1 = 1: %s\n", fd_strerror(rc));
    return rc == FD_ERR_ARG ? 0 : 1;
}

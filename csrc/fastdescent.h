/* fastdescent.h -- the public C ABI of the fastdescent kernel library.
 *
 * This file is also the cffi cdef of the Python extension (csrc/cffi_build.py reads it
 * verbatim, dropping the preprocessor lines), so everything outside preprocessor lines must be plain
 * declarations that cffi can parse: no macros in declarations, no inline functions, no `restrict`.
 *
 * Conventions
 * -----------
 * - One function per kernel row of fastdescent/_contract.py and element type: fd_<row>_f32 / _f64.
 * - Multi-tensor kernels take a *tensor table*: `ntensors` tensors, `sizes[i]` elements each, and one
 *   array of `ntensors` data pointers per column (`param[i]`, `grad[i]` ...). Columns come in contract
 *   order (written columns, then read-only ones); an optional column may be NULL and is then never
 *   touched (a flag or scalar says whether it is used). Then the scalars in contract order: `double`
 *   for reals (rounded once to the element type inside), `int` for flags (0/1). Reductions write their
 *   result to a trailing `out` pointer.
 * - Tensors of one table must not overlap each other or another column (the Python layer checks).
 * - Every function returns an fd_status (FD_OK = 0); fd_strerror(code) gives the text. The library
 *   never prints, exits or aborts; the optimizer and clipping kernels never allocate (the dense-layer
 *   section says which of its kernels may). Arguments are checked before anything is written:
 *   counts (FD_ERR_SIZE: negative, or a table / matrix product above 2^59 elements: never a signed
 *   overflow), pointers (FD_ERR_NULL), alignment (FD_ERR_ALIGN: every data pointer of an array with
 *   elements must be a multiple of the element size, 4 for float and 8 for double, 8 for int64_t;
 *   pointer arrays and sizes aligned to their types) and scalars (FD_ERR_ARG: each kernel's comment
 *   gives its domain, the one the Python optimizers accept; NaN and +-inf are outside every domain
 *   unless said otherwise). These checks cost O(1) per scalar and O(ntensors) per table.
 * - Per-element arithmetic is done in the element type, following the expression order of the NumPy
 *   reference backend (fastdescent/backends/numpy_ref).
 * - Threads: OpenMP, over the flattened (tensor, element) space cut into equal pieces that threads
 *   take dynamically, so one huge tensor and thousands of tiny ones both split evenly; tables below
 *   the parallel grain (fd_set_parallel_grain) run on the calling thread. fork(): in a process made
 *   by fork() after the library was loaded (and its descendants) every kernel runs on the calling
 *   thread and fd_get_num_threads() returns 1, since OpenMP's (libgomp's) thread pool does not
 *   survive fork and a parallel region there would hang; results are the same (they never depend on
 *   the thread count). exec() starts afresh. Reductions combine fixed
 *   per-chunk float64 partials in a fixed order: the result does not depend on the thread count.
 * - No multiply-add contraction in the update kernels: every code path performs exactly the IEEE
 *   operations of the reference, so results are bit-identical across paths and thread counts.
 */
#ifndef FASTDESCENT_H
#define FASTDESCENT_H

#include <stdint.h>

/* The version of this header: FASTDESCENT_VERSION_MAJOR / _MINOR / _PATCH (ints),
 * FASTDESCENT_VERSION_STRING ("0.1.0") and FASTDESCENT_VERSION_NUMBER (MAJOR * 1000000 +
 * MINOR * 1000 + PATCH, for preprocessor comparisons). fastdescent_version.h is generated at build
 * time from fastdescent/_version.py, the one place the version is written (by csrc/Makefile and
 * csrc/cffi_build.py), and installed next to this file. fd_version() gives the library's version
 * at run time. */
#include "fastdescent_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ---------------------------------------------------------------------------- */
enum fd_status {
    FD_OK = 0,
    FD_ERR_NULL = 1,         /* a required pointer (column, tensor, sizes, out) is NULL */
    FD_ERR_SIZE = 2,         /* a negative count or size, or a total / product above 2^59 elements */
    FD_ERR_ARG = 3,          /* an argument outside its domain (e.g. beta1 >= 1, a NaN or infinite
                                scalar, norm_type <= 0, a thread count above FD_MAX_THREADS) */
    FD_ERR_SHAPE = 4,        /* shapes or batch sizes that do not fit together */
    FD_ERR_UNSUPPORTED = 5,  /* asked for something this build or CPU cannot do */
    FD_ERR_ALIGN = 6         /* an array's data pointer is not a multiple of its element size */
};

/* Most threads fd_set_num_threads accepts (more would only make libgomp fail to create them, which
 * ends the process). */
enum fd_limits {
    FD_MAX_THREADS = 1024
};

/* Text for a status code (a static string; "unknown fastdescent status" for unknown codes). */
const char *fd_strerror(int status);

/* ---- library information and settings -------------------------------------------------------- */
/* "MAJOR.MINOR.PATCH" of the C library. */
const char *fd_version(void);
/* Compiler and options the library was built with (a static string). */
const char *fd_build_info(void);

/* OpenMP version macro (_OPENMP, e.g. 201511) the library was built with, 0 if built without. */
int fd_openmp_version(void);
/* Threads a kernel may use: the value set by fd_set_num_threads, else OpenMP's default
 * (OMP_NUM_THREADS or the CPU count); 1 in a build without OpenMP. */
int fd_get_num_threads(void);
/* Set the thread count for later kernel calls (1 <= n <= FD_MAX_THREADS), or 0 to go back to
 * OpenMP's default (capped at FD_MAX_THREADS). FD_ERR_ARG if n < 0 or n > FD_MAX_THREADS. Without
 * OpenMP (or in a fork child, see Threads above) kernels stay single-threaded whatever n. */
int fd_set_num_threads(int n);

/* Opt-in flush of subnormal floats (as torch.set_flush_denormal): with on != 0, every later kernel
 * call runs with the x86 MXCSR bits FTZ (results below FLT_MIN/DBL_MIN become zero) and DAZ
 * (subnormal inputs read as zero) set, on the calling thread and on every thread of its parallel
 * regions, and restores each thread's own MXCSR when it returns: nothing else in the process sees
 * the bits. Subnormal arithmetic costs a microcode assist per result (tens to hundreds of cycles);
 * flushing avoids it but changes results below FLT_MIN, so the kernels then no longer agree bit for
 * bit with the NumPy reference or torch. Returns 1 when the setting took effect, 0 when on != 0 and
 * this build or CPU has no such control (not x86-64/SSE): the setting then stays off. Process-wide;
 * off by default. Off leaves each thread's MXCSR as it is: a thread whose mode the embedding program
 * (or torch.set_flush_denormal) set to flush keeps flushing in these kernels too. */
int fd_set_flush_denormal(int on);
/* 1 if the flush is on (fd_set_flush_denormal), else 0. */
int fd_get_flush_denormal(void);

/* Grain of the multi-threaded split: the fewest elements per thread before a kernel uses more than
 * one thread (and about half the size of the pieces threads take). 0 (the default) means the
 * built-in per-kernel values (65536 for the optimizer updates, 131072 for the light streaming
 * kernels: scale, the reductions). Smaller values thread smaller tables. FD_ERR_ARG if n < 0. */
int fd_set_parallel_grain(int64_t n);
int64_t fd_get_parallel_grain(void);

/* Busy-machine back-off of the multi-threaded dense-layer GEMMs. A parallel region ends only when
 * every thread of its team has arrived; with the machine's other cores busy, a team thread can wait
 * milliseconds for its core. Each threaded GEMM compares its time with what its calling thread would
 * have needed alone (its working time divided by its share of the work); a GEMM that took over 50 us
 * longer (a stall) makes the GEMMs of the process run on the calling thread for a while (50 ms,
 * doubled up to 2 s for each stall soon after the last back-off ended, halved by each threaded GEMM
 * without a stall, 50 ms again after a long clean spell); then they try threads again. Results never
 * depend on it.
 * mode 1: on (the default); 0: off (every GEMM uses the threads its size allows); -1: only query.
 * Returns the mode in force afterwards, or FD_ERR_ARG for another mode. */
int fd_gemm_backoff(int mode);
/* Counters since the library was loaded, into out[5]: out[0] stalls seen, out[1] GEMMs run on one
 * thread by a back-off, out[2] nanoseconds of back-off left now (0: none), out[3] multi-threaded GEMM
 * regions run, out[4] nanoseconds the calling threads waited for their teams in the stalled ones.
 * NULL is ignored. */
void fd_gemm_backoff_stats(int64_t *out);
/* The dense-layer GEMMs' AVX-512 micro-kernel (6 x 32 f32, 6 x 16 f64), used on the AVX2+FMA path
 * for outputs at least 32 (f32) / 16 (f64) columns wide when the CPU and OS support AVX-512F; the
 * same results as the AVX2 kernel (the same multiply-add chains). mode 1: use it (the default;
 * FD_ERR_UNSUPPORTED where it cannot run), 0: AVX2 only, -1: query. Returns 1 if it is in use now
 * (on, supported, and the AVX2+FMA path in force), 0 if not, or FD_ERR_ARG for another mode. */
int fd_gemm_avx512(int mode);

/* CPU features seen at run time: a bitwise OR of fd_cpu_feature. */
enum fd_cpu_feature {
    FD_CPU_SSE2 = 1,
    FD_CPU_AVX = 2,
    FD_CPU_AVX2 = 4,
    FD_CPU_FMA = 8,
    FD_CPU_AVX512F = 16,
    FD_CPU_NEON = 32
};
unsigned int fd_cpu_features(void);

/* Kernel code paths: the portable one (what the compiler's baseline target gives) and, on x86-64
 * builds with GCC or clang, one compiled for AVX2+FMA, chosen at run time. */
enum fd_simd_path {
    FD_PATH_GENERIC = 0,
    FD_PATH_AVX2_FMA = 1
};
/* Path in use now. */
int fd_get_simd_path(void);
/* Force a path (for tests and benchmarks); -1 goes back to the best one this CPU supports.
 * FD_ERR_UNSUPPORTED if the path is not compiled in or the CPU lacks it; FD_ERR_ARG if unknown. */
int fd_set_simd_path(int path);

/* ---- SGD (fd_sgd.c) ---------------------------------------------------------------------------- */
/* g' = -g if maximize; g' += weight_decay*p if weight_decay != 0;
 * if momentum != 0: b = g' (first_step) or b = momentum*b + (1-dampening)*g';
 *                   g' = g' + momentum*b (nesterov) or g' = b;
 * p -= lr*g'. momentum_buffer may be NULL iff momentum == 0.
 * Domain (else FD_ERR_ARG): lr, momentum, weight_decay finite and >= 0; dampening finite; nesterov
 * only with momentum > 0 and dampening == 0. */
int fd_sgd_f32(int64_t ntensors, const int64_t *sizes,
               float *const *param, float *const *momentum_buffer, const float *const *grad,
               double lr, double momentum, double dampening, double weight_decay,
               int nesterov, int maximize, int first_step);
int fd_sgd_f64(int64_t ntensors, const int64_t *sizes,
               double *const *param, double *const *momentum_buffer, const double *const *grad,
               double lr, double momentum, double dampening, double weight_decay,
               int nesterov, int maximize, int first_step);

/* ---- Adam / AdamW (fd_adam.c) ------------------------------------------------------------------ */
/* g' = -g if maximize; p *= decay; g' += weight_decay*p if weight_decay != 0;
 * m = beta1*m + (1-beta1)*g'; v = beta2*v + (1-beta2)*g'*g';
 * vmax = max(vmax, v) if amsgrad (then used in place of v);
 * p -= step_size * m / (sqrt(v)/bias_correction2_sqrt + eps).
 * max_exp_avg_sq may be NULL iff amsgrad == 0.
 * Domain (else FD_ERR_ARG): 0 <= beta1, beta2 < 1; eps, weight_decay, step_size finite and >= 0;
 * decay finite and <= 1 (1 - lr*wd); 0 < bias_correction2_sqrt <= 1 (sqrt(1 - beta2**t)). */
int fd_adam_f32(int64_t ntensors, const int64_t *sizes,
                float *const *param, float *const *exp_avg, float *const *exp_avg_sq,
                float *const *max_exp_avg_sq, const float *const *grad,
                double beta1, double beta2, double eps, double weight_decay, double decay,
                double step_size, double bias_correction2_sqrt, int amsgrad, int maximize);
int fd_adam_f64(int64_t ntensors, const int64_t *sizes,
                double *const *param, double *const *exp_avg, double *const *exp_avg_sq,
                double *const *max_exp_avg_sq, const double *const *grad,
                double beta1, double beta2, double eps, double weight_decay, double decay,
                double step_size, double bias_correction2_sqrt, int amsgrad, int maximize);

/* ---- RMSprop (fd_rmsprop.c) -------------------------------------------------------------------- */
/* g' = -g if maximize; g' += weight_decay*p if weight_decay != 0; v = alpha*v + (1-alpha)*g'*g';
 * centered: a = alpha*a + (1-alpha)*g', d = sqrt(v - a*a) + eps; else d = sqrt(v) + eps;
 * momentum > 0: b = momentum*b + g'/d, p -= lr*b; else p -= lr*(g'/d).
 * grad_avg may be NULL iff centered == 0; momentum_buffer may be NULL iff momentum == 0.
 * Domain (else FD_ERR_ARG): lr, alpha, eps, weight_decay, momentum finite and >= 0. */
int fd_rmsprop_f32(int64_t ntensors, const int64_t *sizes,
                   float *const *param, float *const *square_avg, float *const *grad_avg,
                   float *const *momentum_buffer, const float *const *grad,
                   double lr, double alpha, double eps, double weight_decay, double momentum,
                   int centered, int maximize);
int fd_rmsprop_f64(int64_t ntensors, const int64_t *sizes,
                   double *const *param, double *const *square_avg, double *const *grad_avg,
                   double *const *momentum_buffer, const double *const *grad,
                   double lr, double alpha, double eps, double weight_decay, double momentum,
                   int centered, int maximize);

/* ---- Adagrad (fd_adagrad.c) -------------------------------------------------------------------- */
/* g' = -g if maximize; g' += weight_decay*p if weight_decay != 0; s += g'*g';
 * p -= clr * (g' / (sqrt(s) + eps)).
 * Domain (else FD_ERR_ARG): clr, eps, weight_decay finite and >= 0. */
int fd_adagrad_f32(int64_t ntensors, const int64_t *sizes,
                   float *const *param, float *const *sum, const float *const *grad,
                   double clr, double eps, double weight_decay, int maximize);
int fd_adagrad_f64(int64_t ntensors, const int64_t *sizes,
                   double *const *param, double *const *sum, const double *const *grad,
                   double clr, double eps, double weight_decay, int maximize);

/* ---- Lion (fd_lion.c): fd_lion_f32 / fd_lion_f64 ---------------------------------------------- */
/* g' = -g if maximize; c = beta1*m + one_minus_beta1*g'; p *= decay (1 - lr*wd);
 * p -= lr*sign(c) (sign(+-0) = 0, sign(NaN) = NaN); m = beta2*m + one_minus_beta2*g'.
 * Domain (else FD_ERR_ARG): lr finite and >= 0; 0 <= beta1, beta2 < 1;
 * 0 < one_minus_beta1, one_minus_beta2 <= 1; decay finite and <= 1. */
int fd_lion_f32(int64_t ntensors, const int64_t *sizes,
                float *const *param, float *const *exp_avg, const float *const *grad,
                double lr, double beta1, double one_minus_beta1, double beta2,
                double one_minus_beta2, double decay, int maximize);
int fd_lion_f64(int64_t ntensors, const int64_t *sizes,
                double *const *param, double *const *exp_avg, const double *const *grad,
                double lr, double beta1, double one_minus_beta1, double beta2,
                double one_minus_beta2, double decay, int maximize);

/* ---- LAMB (fd_lamb.c): fd_lamb_f32 / fd_lamb_f64 ---------------------------------------------- */
/* g' = -g if maximize; m = beta1*m + one_minus_beta1*g'; v = beta2*v + one_minus_beta2*g'*g';
 * r = (m*inv_bias_correction1) / (sqrt(v*inv_bias_correction2) + eps) (+ weight_decay*p if
 * weight_decay != 0), inv_bias_correction = 1/(1 - beta**t) (or 1 without bias correction);
 * per tensor i of the table: pn = ||p_i||, rn = ||r_i|| (float64, in a fixed order that does not
 * depend on the thread count), step = lr * (pn/rn if pn > 0 and rn > 0 else 1) rounded once to the
 * element type; p -= step*r. One call covers every tensor (the norms are per tensor, inside it).
 * Domain (else FD_ERR_ARG): lr, eps, weight_decay finite and >= 0; 0 <= beta1, beta2 < 1;
 * 0 < one_minus_beta1, one_minus_beta2 <= 1; inv_bias_correction1, inv_bias_correction2 finite
 * and >= 1. */
int fd_lamb_f32(int64_t ntensors, const int64_t *sizes,
                float *const *param, float *const *exp_avg, float *const *exp_avg_sq,
                const float *const *grad,
                double lr, double beta1, double one_minus_beta1, double beta2,
                double one_minus_beta2, double eps, double weight_decay,
                double inv_bias_correction1, double inv_bias_correction2, int maximize);
int fd_lamb_f64(int64_t ntensors, const int64_t *sizes,
                double *const *param, double *const *exp_avg, double *const *exp_avg_sq,
                const double *const *grad,
                double lr, double beta1, double one_minus_beta1, double beta2,
                double one_minus_beta2, double eps, double weight_decay,
                double inv_bias_correction1, double inv_bias_correction2, int maximize);

/* ---- Rprop (fd_rprop.c) ----------------------------------------------------------------------- */
/* fd_rprop_f32 / fd_rprop_f64, torch.optim.Rprop's rule per element (all in the element type):
 * g' = -g if maximize; s = g'*prev; f = etaplus if s > 0, etaminus if s < 0, else 1 (s NaN: 1);
 * step_size = clamp(step_size*f, step_size_min, step_size_max); g' = 0 where f == etaminus;
 * p -= sign(g')*step_size (sign(0) = sign(NaN) = 0); prev = g'.
 * Domain (else FD_ERR_ARG): 0 < etaminus < 1 < etaplus, 0 <= step_size_min <= step_size_max, all
 * finite. */
int fd_rprop_f32(int64_t ntensors, const int64_t *sizes,
                 float *const *param, float *const *prev, float *const *step_size,
                 const float *const *grad,
                 double etaminus, double etaplus, double step_size_min, double step_size_max,
                 int maximize);
int fd_rprop_f64(int64_t ntensors, const int64_t *sizes,
                 double *const *param, double *const *prev, double *const *step_size,
                 const double *const *grad,
                 double etaminus, double etaplus, double step_size_min, double step_size_max,
                 int maximize);

/* ---- Adamax (fd_adamax.c) ---------------------------------------------------------------------- */
/* g' = -g if maximize; g' += weight_decay*p if weight_decay != 0;
 * m = (lerp_from_grad ? g' : m) + lerp_weight*(g' - m)   (torch's m.lerp_(g', 1 - beta1));
 * u = max(u*beta2, |g'| + eps), NaN-propagating; p -= (clr*m) / u, clr = lr / (1 - beta1**t).
 * Domain (else FD_ERR_ARG): 0 < lerp_weight < 0.5 if lerp_from_grad == 0, else
 * -0.5 <= lerp_weight <= 0; 0 <= beta2 < 1; eps, weight_decay, clr finite and >= 0. */
int fd_adamax_f32(int64_t ntensors, const int64_t *sizes,
                  float *const *param, float *const *exp_avg, float *const *exp_inf,
                  const float *const *grad,
                  double lerp_weight, int lerp_from_grad, double beta2, double eps,
                  double weight_decay, double clr, int maximize);
int fd_adamax_f64(int64_t ntensors, const int64_t *sizes,
                  double *const *param, double *const *exp_avg, double *const *exp_inf,
                  const double *const *grad,
                  double lerp_weight, int lerp_from_grad, double beta2, double eps,
                  double weight_decay, double clr, int maximize);

/* ---- Adadelta (fd_adadelta.c) ------------------------------------------------------------------ */
/* g' = -g if maximize; g' += weight_decay*p if weight_decay != 0;
 * v = rho*v + (one_minus_rho*g')*g'; d = sqrt(a + eps)/sqrt(v + eps)*g';
 * a = rho*a + (one_minus_rho*d)*d; p -= lr*d.
 * Domain (else FD_ERR_ARG): lr, eps, weight_decay finite and >= 0; rho and one_minus_rho in [0, 1]. */
int fd_adadelta_f32(int64_t ntensors, const int64_t *sizes,
                    float *const *param, float *const *square_avg, float *const *acc_delta,
                    const float *const *grad,
                    double lr, double rho, double one_minus_rho, double eps, double weight_decay,
                    int maximize);
int fd_adadelta_f64(int64_t ntensors, const int64_t *sizes,
                    double *const *param, double *const *square_avg, double *const *acc_delta,
                    const double *const *grad,
                    double lr, double rho, double one_minus_rho, double eps, double weight_decay,
                    int maximize);

/* ---- NAdam / NAdamW (fd_nadam.c) --------------------------------------------------------------- */
/* fd_nadam_f32 / fd_nadam_f64: torch.optim.NAdam (NAdamW with decay != 1), the scalars derived in
 * float64 by the caller (fastdescent/rules/nadam.py):
 * g' = -g if maximize; p *= decay; g' += weight_decay*p if weight_decay != 0;
 * m = beta1*m + one_minus_beta1*g'; v = beta2*v + one_minus_beta2*g'*g';
 * p -= (step_size_grad*g' + step_size_exp_avg*m) / (sqrt(v) + eps_scaled), where
 * step_size_grad = lr*(1-mu_t)/(1-mu_product_t)*sqrt(bc2),
 * step_size_exp_avg = lr*mu_{t+1}/(1-mu_product_t*mu_{t+1})*sqrt(bc2), eps_scaled = eps*sqrt(bc2).
 * Domain (else FD_ERR_ARG): 0 <= beta1, beta2 < 1; 0 < one_minus_beta1, one_minus_beta2 <= 1;
 * weight_decay, step_size_grad, step_size_exp_avg, eps_scaled finite and >= 0; decay finite, <= 1. */
int fd_nadam_f32(int64_t ntensors, const int64_t *sizes,
                 float *const *param, float *const *exp_avg, float *const *exp_avg_sq,
                 const float *const *grad,
                 double beta1, double one_minus_beta1, double beta2, double one_minus_beta2,
                 double weight_decay, double decay, double step_size_grad,
                 double step_size_exp_avg, double eps_scaled, int maximize);
int fd_nadam_f64(int64_t ntensors, const int64_t *sizes,
                 double *const *param, double *const *exp_avg, double *const *exp_avg_sq,
                 const double *const *grad,
                 double beta1, double one_minus_beta1, double beta2, double one_minus_beta2,
                 double weight_decay, double decay, double step_size_grad,
                 double step_size_exp_avg, double eps_scaled, int maximize);

/* ---- RAdam / RAdamW (fd_radam.c) --------------------------------------------------------------- */
/* fd_radam_f32 / fd_radam_f64: torch.optim.RAdam (RAdamW with decay != 1), the scalars derived in
 * float64 by the caller (fastdescent/rules/radam.py):
 * g' = -g if maximize; p *= decay; g' += weight_decay*p if weight_decay != 0;
 * m = beta1*m + one_minus_beta1*g'; v = beta2*v + one_minus_beta2*g'*g';
 * rectify (rho_t > 5): p -= step_size * (m / (sqrt(v) + eps)), step_size = lr*r_t*sqrt(bc2)/bc1;
 * else p -= step_size * m, step_size = lr/bc1.
 * Domain (else FD_ERR_ARG): 0 <= beta1, beta2 < 1; 0 < one_minus_beta1, one_minus_beta2 <= 1;
 * eps, weight_decay, step_size finite and >= 0; decay finite and <= 1. */
int fd_radam_f32(int64_t ntensors, const int64_t *sizes,
                 float *const *param, float *const *exp_avg, float *const *exp_avg_sq,
                 const float *const *grad,
                 double beta1, double one_minus_beta1, double beta2, double one_minus_beta2,
                 double eps, double weight_decay, double decay, double step_size,
                 int rectify, int maximize);
int fd_radam_f64(int64_t ntensors, const int64_t *sizes,
                 double *const *param, double *const *exp_avg, double *const *exp_avg_sq,
                 const double *const *grad,
                 double beta1, double one_minus_beta1, double beta2, double one_minus_beta2,
                 double eps, double weight_decay, double decay, double step_size,
                 int rectify, int maximize);

/* ---- gradient clipping helpers (fd_clip.c) ----------------------------------------------------- */
/* *out = sum over all elements of |g|**norm_type, accumulated in float64 (norm_type > 0); for
 * norm_type = +inf, *out = max |g| (NaN if any element is NaN; 0 for an empty table).
 * FD_ERR_ARG if norm_type is NaN or <= 0. */
int fd_norm_pow_sum_f32(int64_t ntensors, const int64_t *sizes, const float *const *grad,
                        double norm_type, double *out);
int fd_norm_pow_sum_f64(int64_t ntensors, const int64_t *sizes, const double *const *grad,
                        double norm_type, double *out);
/* g *= factor (factor rounded once to the element type). FD_ERR_ARG if factor is NaN or +-inf. */
int fd_scale_f32(int64_t ntensors, const int64_t *sizes, float *const *grad, double factor);
int fd_scale_f64(int64_t ntensors, const int64_t *sizes, double *const *grad, double factor);
/* *out = 1 if every element of every tensor is finite, else 0. */
int fd_all_finite_f32(int64_t ntensors, const int64_t *sizes, const float *const *grad, int *out);
int fd_all_finite_f64(int64_t ntensors, const int64_t *sizes, const double *const *grad, int *out);

/* g = min(max(g, -c), c) with c = clip_value rounded to the element type, as torch.clamp_ (a NaN
 * stays NaN; -0.0 stays -0.0). FD_ERR_ARG unless clip_value is finite and >= 0. */
int fd_clip_value_f32(int64_t ntensors, const int64_t *sizes, float *const *grad, double clip_value);
int fd_clip_value_f64(int64_t ntensors, const int64_t *sizes, double *const *grad,
                      double clip_value);

/* ---- proximal L1 (fd_prox.c): fd_prox_f32 / fd_prox_f64 ---------------------------------------- */
/* Soft thresholding after an update: a = |p| - threshold; p = a <= 0 ? +0.0 : copysign(a, p), i.e.
 * sign(p) * max(|p| - threshold, 0) with every thresholded element exactly +0.0 (never -0.0); NaN and
 * +-inf pass through. threshold = lr_in_force * l1. Domain (else FD_ERR_ARG): threshold finite, >= 0. */
int fd_prox_f32(int64_t ntensors, const int64_t *sizes, float *const *param, double threshold);
int fd_prox_f64(int64_t ntensors, const int64_t *sizes, double *const *param, double threshold);

/* ---- gradient noise (fd_noise.c): fd_noise_f32 / fd_noise_f64 ---------------------------------- */
/* p += sigma * z, z ~ N(0, 1) a pure function of (seed, param_index[i], step, element index):
 * Philox4x32-10 keyed per tensor by (seed, param_index[i]), counter (element / 2, step), then
 * Box-Muller in double, z rounded to the element type (fd_noise.c gives the exact recipe). No
 * state; identical for any thread count. param_index: ntensors int64 values (the tensors'
 * positions in the optimizer's parameter list). Domain (else FD_ERR_ARG): sigma finite and >= 0,
 * seed >= 0, step >= 1, param_index[i] >= 0; FD_ERR_NULL / FD_ERR_ALIGN for a bad param_index. */
int fd_noise_f32(int64_t ntensors, const int64_t *sizes, float *const *param,
                 const int64_t *param_index, double sigma, int64_t seed, int64_t step);
int fd_noise_f64(int64_t ntensors, const int64_t *sizes, double *const *param,
                 const int64_t *param_index, double sigma, int64_t seed, int64_t step);

/* ---- mixed precision (fd_mixed.c) ------------------------------------------------------------- */
/* Storage codes of a column (fastdescent/precision.py, docs/low-precision.md): float32; bfloat16 (the
 * top 16 bits of a float32); IEEE float16; 8-bit block codes of the signed map (E4M3, bias 15) or the
 * unsigned map (E5M3, bias 31), one float32 scale per FD_MIXED_BLOCK elements from the tensor's
 * start. FD_STORE_ABSENT: the state column is not there. */
enum fd_store_code {
    FD_STORE_ABSENT = -1,
    FD_STORE_F32 = 0,
    FD_STORE_BF16 = 1,
    FD_STORE_F16 = 2,
    FD_STORE_Q8S = 3,
    FD_STORE_Q8U = 4
};
enum fd_mixed_rule_id { FD_RULE_SGD = 0, FD_RULE_ADAM = 1, FD_RULE_RMSPROP = 2 };
enum fd_mixed_limits { FD_MIXED_BLOCK = 256, FD_MIXED_MAX_STATE = 3 };

/* One step of SGD / Adam / RMSprop over a table whose columns are stored in low precision, with
 * float32 arithmetic: every value is read into float32, the rule's float32 update (the same
 * operations as fd_<rule>_f32) runs on it, and the results are stored back: the parameter rounded to
 * nearest-even (or, bfloat16 with `stochastic`, rounded stochastically), bfloat16 state likewise,
 * float16 to nearest, 8-bit state quantized per block with the block's new absmax.
 *   param[i]      ntensors pointers, storage pcode (F32, BF16 or F16)          written
 *   master        NULL, or ntensors float32 copies of the parameters (pcode BF16/F16 only): then the
 *                 update runs on the copy and param[i] is the copy rounded      written
 *   grad[i]       storage gcodes[i] (F32 or pcode)                              read
 *   state         FD_MIXED_MAX_STATE * ntensors pointers, column k of tensor i at state[k*ntensors+i],
 *                 in contract order (adam: exp_avg, exp_avg_sq, max_exp_avg_sq; sgd: momentum_buffer;
 *                 rmsprop: square_avg, grad_avg, momentum_buffer), storage scodes[k]    written
 *   scales        same layout: float32 [ceil(sizes[i]/FD_MIXED_BLOCK)] per 8-bit column (others
 *                 unused; may be NULL when no column is 8-bit)                   written
 *   param_index   ntensors int64 >= 0: keys the random bits of stochastic rounding
 * seed, step: the random bits of element e of tensor i are Philox4x32-10 at counter (e / 8, step mod
 * 2^32, 0x53520000 | stream) keyed by (seed, param_index[i]) (stream 0: the parameter, 1 + k: state
 * column k); results do not depend on the thread count. grad_scale (finite, > 0): the gradient is
 * divided by it (float32) first. scalars: the rule's float32-kernel scalars as doubles, flags as 0/1 --
 * adam (9): beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad,
 * maximize; sgd (7): lr, momentum, dampening, weight_decay, nesterov, maximize, first_step;
 * rmsprop (7): lr, alpha, eps, weight_decay, momentum, centered, maximize; domains as those kernels.
 * FD_ERR_ARG also for an unknown rule or code, a missing column the scalars need, or a master copy
 * of float32 parameters. Uses up to ~30 KiB of stack per thread; no allocation. */
int fd_mixed_step(int rule, int64_t ntensors, const int64_t *sizes, void *const *param, int pcode,
                  float *const *master, const void *const *grad, const int8_t *gcodes,
                  void *const *state, float *const *scales, const int32_t *scodes,
                  const int64_t *param_index, uint64_t seed, uint64_t step, int stochastic,
                  double grad_scale, const double *scalars, int64_t nscalars);
/* *out = 1 if every element of every gradient (storage gcodes[i]: F32, BF16 or F16) is finite,
 * else 0. */
int fd_grads_finite(int64_t ntensors, const int64_t *sizes, const void *const *grad,
                    const int8_t *gcodes, int *out);
/* 8-bit block quantization of n float32 values (code FD_STORE_Q8S or FD_STORE_Q8U): codes [n],
 * scales [ceil(n/FD_MIXED_BLOCK)]; and back. Single-threaded helpers (tests, conversions). */
int fd_q8_quantize(int64_t n, const float *x, int code, uint8_t *codes, float *scales);
int fd_q8_dequantize(int64_t n, const uint8_t *codes, const float *scales, int code, float *x);

/* ---- per-step scalars (fd_scalars.c) ----------------------------------------------------------- */
/* The update kernels above take per-step scalars (bias corrections, effective step sizes, decay
 * factors) that the Python layer derives in float64 from the hyperparameters and the step count
 * (fastdescent/rules/<name>.py, Rule.scalars). These helpers derive them the same way, with the
 * same float64 operations in the same order, so their values are bit for bit those of the Python
 * layer (tests/test_c_scalars.py compares them). An embedder's step is then two calls:
 *
 *     fd_adam_scalars_t s;
 *     if (fd_adam_scalars(&hp, t, &s) == FD_OK)
 *         fd_adam_f32(n, sizes, p, m, v, NULL, g, s.beta1, s.beta2, s.eps, s.weight_decay,
 *                     s.decay, s.step_size, s.bias_correction2_sqrt, s.amsgrad, s.maximize);
 *
 * int fd_<name>_scalars(const fd_<name>_hparams_t *hp, int64_t step, [extra,] fd_<name>_scalars_t *out)
 * - hp: the optimizer's hyperparameters, named as torch.optim's / fastdescent.optim's (betas are
 *   beta1, beta2); flags are int 0/1.
 * - step: the step number, 1 on the first step (the count after this step, as torch's `step`).
 * - out: the fields are the kernel's scalar parameters, same names, same order (float64 reals,
 *   int flags), plus the values documented per optimizer (SGD's noise_sigma, NAdam's mu_product).
 * Returns FD_OK, or, leaving *out untouched: FD_ERR_NULL (hp or out NULL); FD_ERR_ARG for a
 * hyperparameter outside the domain fastdescent.optim accepts (said per struct; NaN and +-inf are
 * outside every domain), a flag other than 0 or 1, step < 1, or a derived scalar that is not finite
 * (e.g. lr = 1e300 with lr / (1 - beta1**t) overflowing), as the Python layer refuses it. For a
 * float32 table the Python layer also refuses scalars beyond FLT_MAX; these helpers do not know the
 * element type and leave that check to the caller.
 * Not covered: the proximal L1 pass (fd_prox: threshold = lr * l1, Adagrad: clr * l1) and the
 * initial state fills (Adagrad's sum = initial_accumulator_value, Rprop's step_size = lr). */

/* SGD. Domain: lr, momentum, weight_decay, noise_std, noise_decay finite and >= 0; dampening finite;
 * nesterov only with momentum > 0 and dampening == 0. first: 1 on the step that creates the momentum
 * buffer (the first step), else 0 (becomes first_step). noise_sigma = noise_std * step**(-noise_decay)
 * (0 when noise_std == 0): the sigma of fd_noise after the update, when it is > 0. */
typedef struct fd_sgd_hparams_s {
    double lr, momentum, dampening, weight_decay, noise_std, noise_decay;
    int nesterov, maximize;
} fd_sgd_hparams_t;
typedef struct fd_sgd_scalars_s {
    double lr, momentum, dampening, weight_decay;
    int nesterov, maximize, first_step;
    double noise_sigma;
} fd_sgd_scalars_t;
int fd_sgd_scalars(const fd_sgd_hparams_t *hp, int64_t step, int first, fd_sgd_scalars_t *out);

/* Adam, and AdamW with decoupled_weight_decay = 1. Domain: lr, eps, weight_decay finite and >= 0;
 * 0 <= beta1, beta2 < 1. */
typedef struct fd_adam_hparams_s {
    double lr, beta1, beta2, eps, weight_decay;
    int amsgrad, maximize, decoupled_weight_decay;
} fd_adam_hparams_t;
typedef struct fd_adam_scalars_s {
    double beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt;
    int amsgrad, maximize;
} fd_adam_scalars_t;
int fd_adam_scalars(const fd_adam_hparams_t *hp, int64_t step, fd_adam_scalars_t *out);

/* RMSprop (no step dependence). Domain: lr, alpha, eps, weight_decay, momentum finite and >= 0. */
typedef struct fd_rmsprop_hparams_s {
    double lr, alpha, eps, weight_decay, momentum;
    int centered, maximize;
} fd_rmsprop_hparams_t;
typedef struct fd_rmsprop_scalars_s {
    double lr, alpha, eps, weight_decay, momentum;
    int centered, maximize;
} fd_rmsprop_scalars_t;
int fd_rmsprop_scalars(const fd_rmsprop_hparams_t *hp, int64_t step, fd_rmsprop_scalars_t *out);

/* Adagrad: clr = lr / (1 + (step - 1) * lr_decay). Domain: lr, lr_decay, eps, weight_decay finite
 * and >= 0. */
typedef struct fd_adagrad_hparams_s {
    double lr, lr_decay, eps, weight_decay;
    int maximize;
} fd_adagrad_hparams_t;
typedef struct fd_adagrad_scalars_s {
    double clr, eps, weight_decay;
    int maximize;
} fd_adagrad_scalars_t;
int fd_adagrad_scalars(const fd_adagrad_hparams_t *hp, int64_t step, fd_adagrad_scalars_t *out);

/* Lion (no step dependence). Domain: lr, weight_decay finite and >= 0; 0 <= beta1, beta2 < 1. */
typedef struct fd_lion_hparams_s {
    double lr, beta1, beta2, weight_decay;
    int maximize;
} fd_lion_hparams_t;
typedef struct fd_lion_scalars_s {
    double lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay;
    int maximize;
} fd_lion_scalars_t;
int fd_lion_scalars(const fd_lion_hparams_t *hp, int64_t step, fd_lion_scalars_t *out);

/* LAMB. Domain: lr, eps, weight_decay finite and >= 0; 0 <= beta1, beta2 < 1. */
typedef struct fd_lamb_hparams_s {
    double lr, beta1, beta2, eps, weight_decay;
    int bias_correction, maximize;
} fd_lamb_hparams_t;
typedef struct fd_lamb_scalars_s {
    double lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
        inv_bias_correction1, inv_bias_correction2;
    int maximize;
} fd_lamb_scalars_t;
int fd_lamb_scalars(const fd_lamb_hparams_t *hp, int64_t step, fd_lamb_scalars_t *out);

/* Rprop (no step dependence; lr only seeds the step_size buffer). Domain: lr finite and >= 0;
 * 0 < etaminus < 1 < etaplus; 0 <= step_size_min <= step_size_max; all finite. */
typedef struct fd_rprop_hparams_s {
    double lr, etaminus, etaplus, step_size_min, step_size_max;
    int maximize;
} fd_rprop_hparams_t;
typedef struct fd_rprop_scalars_s {
    double etaminus, etaplus, step_size_min, step_size_max;
    int maximize;
} fd_rprop_scalars_t;
int fd_rprop_scalars(const fd_rprop_hparams_t *hp, int64_t step, fd_rprop_scalars_t *out);

/* Adamax. Domain: lr, eps, weight_decay finite and >= 0; 0 <= beta1, beta2 < 1. */
typedef struct fd_adamax_hparams_s {
    double lr, beta1, beta2, eps, weight_decay;
    int maximize;
} fd_adamax_hparams_t;
typedef struct fd_adamax_scalars_s {
    double lerp_weight;
    int lerp_from_grad;
    double beta2, eps, weight_decay, clr;
    int maximize;
} fd_adamax_scalars_t;
int fd_adamax_scalars(const fd_adamax_hparams_t *hp, int64_t step, fd_adamax_scalars_t *out);

/* Adadelta (no step dependence). Domain: lr, eps, weight_decay finite and >= 0; 0 <= rho <= 1. */
typedef struct fd_adadelta_hparams_s {
    double lr, rho, eps, weight_decay;
    int maximize;
} fd_adadelta_hparams_t;
typedef struct fd_adadelta_scalars_s {
    double lr, rho, one_minus_rho, eps, weight_decay;
    int maximize;
} fd_adadelta_scalars_t;
int fd_adadelta_scalars(const fd_adadelta_hparams_t *hp, int64_t step, fd_adadelta_scalars_t *out);

/* NAdam, and NAdamW with decoupled_weight_decay = 1. NAdam's scalars depend on a running product
 * of momentum coefficients kept per parameter: pass mu_product = 1 on the first step and, on every
 * later step, the out->mu_product of the step before (the product after this step, which is what
 * torch keeps as state["mu_product"]). Domain: lr, eps, weight_decay, momentum_decay finite and
 * >= 0; 0 <= beta1, beta2 < 1; 0 <= mu_product <= 1. */
typedef struct fd_nadam_hparams_s {
    double lr, beta1, beta2, eps, weight_decay, momentum_decay;
    int decoupled_weight_decay, maximize;
} fd_nadam_hparams_t;
typedef struct fd_nadam_scalars_s {
    double beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay, step_size_grad,
        step_size_exp_avg, eps_scaled;
    int maximize;
    double mu_product;
} fd_nadam_scalars_t;
int fd_nadam_scalars(const fd_nadam_hparams_t *hp, int64_t step, double mu_product,
                     fd_nadam_scalars_t *out);

/* RAdam, and RAdamW with decoupled_weight_decay = 1. Domain: lr, eps, weight_decay finite and
 * >= 0; 0 <= beta1, beta2 < 1. */
typedef struct fd_radam_hparams_s {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled_weight_decay, maximize;
} fd_radam_hparams_t;
typedef struct fd_radam_scalars_s {
    double beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, step_size;
    int rectify, maximize;
} fd_radam_scalars_t;
int fd_radam_scalars(const fd_radam_hparams_t *hp, int64_t step, fd_radam_scalars_t *out);

/* ---- memory roofline (fd_stream.c) ------------------------------------------------------------- */
/* A plain streaming pass over n elements with the kernels' threading: reads src[0..nsrc-1] and
 * writes dst[0..ndst-1] (each dst[j][i] = sum_k src[k][i]). A dst may be one of the srcs (in place),
 * which is how an optimizer's traffic is modelled: Adam fp32 = read p, g, m, v and write p, m, v,
 * i.e. fd_stream_f32(n, 4, {p, g, m, v}, 3, {p, m, v}) moves the same 28 bytes per element. */
int fd_stream_f32(int64_t n, int nsrc, const float *const *src, int ndst, float *const *dst);
int fd_stream_f64(int64_t n, int nsrc, const double *const *src, int ndst, double *const *dst);

/* ---- dense layers (fd_matmul.c, fd_activation.c, fd_loss.c): maintained separately ---- */
/* Batched matmul of a dense layer. x (B, M, K), w (Bw, K, N), b (Bw, N), y / dy (B, M, N); dx, dw, db
 * shaped like x, w, b; all C-contiguous. Bw == 1 (one weight for the whole batch) or Bw == B (one per
 * item); item i uses w[i] if Bw == B, else w[0].
 *   fwd:   y[i]   = x[i] @ w[i|0] (+ b[i|0] broadcast over rows; b may be NULL)       (overwrites)
 *   bwd_x: dx[i] += dy[i] @ w[i|0]^T                                                  (accumulates)
 *   bwd_w: dw[j] += sum over items i using w[j] of x[i]^T @ dy[i];
 *          db[j] += column sums of those dy[i] (db may be NULL)                       (accumulates)
 * Register-blocked, cache-blocked GEMM (AVX2+FMA micro-kernel chosen at run time); deterministic,
 * bit-identical for any thread count. Outputs must not overlap inputs. These three kernels may
 * allocate packing scratch (released before returning); without it they still compute the result.
 * FD_ERR_SIZE: a negative dimension, or an array (B*M*K, Bw*K*N, B*M*N) above 2^59 elements;
 * FD_ERR_SHAPE: Bw not 1 or B; FD_ERR_NULL: a NULL array with elements; FD_ERR_ALIGN: a misaligned
 * array. Nothing is written on error. */
int fd_matmul_fwd_f32(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                      float *y, const float *x, const float *w, const float *b);
int fd_matmul_fwd_f64(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                      double *y, const double *x, const double *w, const double *b);
int fd_matmul_bwd_x_f32(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                        float *dx, const float *dy, const float *w);
int fd_matmul_bwd_x_f64(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                        double *dx, const double *dy, const double *w);
int fd_matmul_bwd_w_f32(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                        float *dw, float *db, const float *x, const float *dy);
int fd_matmul_bwd_w_f64(int64_t B, int64_t Bw, int64_t M, int64_t K, int64_t N,
                        double *dw, double *db, const double *x, const double *dy);

/* Kind enums of the dense-layer kernels; the same values as fastdescent/_contract.py's ACT_KINDS,
 * LOSS_KINDS and LAYER_TYPES (tests/test_contract.py checks that they agree). */
enum fd_act_kind { FD_ACT_RELU = 0, FD_ACT_TANH = 1, FD_ACT_SIGMOID = 2, FD_ACT_GELU = 3 };
enum fd_loss_kind { FD_LOSS_XENT = 0, FD_LOSS_MSE = 1 };
enum fd_layer_type { FD_LAYER_LINEAR = 0, FD_LAYER_ACT = 1 };

/* Elementwise activation over n elements; kind (enum fd_act_kind): 0 relu, 1 tanh, 2 sigmoid, 3 gelu (exact:
 * x/2 * (1 + erf(x/sqrt 2))). fwd: y = f(x), y may equal x (in place). bwd: dx += dy * f'(x), using
 * y = f(x) for tanh (1 - y^2) and sigmoid (y (1 - y)); relu' = (x > 0). FD_ERR_ARG: unknown kind. */
int fd_act_fwd_f32(int64_t n, float *y, const float *x, int kind);
int fd_act_fwd_f64(int64_t n, double *y, const double *x, int kind);
int fd_act_bwd_f32(int64_t n, float *dx, const float *dy, const float *x, const float *y, int kind);
int fd_act_bwd_f64(int64_t n, double *dx, const double *dy, const double *x, const double *y,
                   int kind);

/* Losses with their gradient, in one pass; the loss (accumulated in float64 over fixed chunks, so
 * independent of the thread count) goes to *loss_out.
 * mse:  *loss_out = scale * sum (pred - target)^2;  dpred += 2*scale * (pred - target).
 * xent: logits (R, C), labels (R,) in [0, C): *loss_out = scale * sum_r (logsumexp(logits[r]) -
 *       logits[r, labels[r]]) (max-shifted, stable); dlogits += scale * (softmax(logits[r]) -
 *       onehot(labels[r])). FD_ERR_ARG if a label is out of range (nothing written, *loss_out
 *       untouched). FD_ERR_ARG also if scale is NaN or +-inf; FD_ERR_SIZE if R*C > 2^59. */
int fd_mse_fwd_bwd_f32(int64_t n, float *dpred, const float *pred, const float *target,
                       double scale, double *loss_out);
int fd_mse_fwd_bwd_f64(int64_t n, double *dpred, const double *pred, const double *target,
                       double scale, double *loss_out);
int fd_xent_fwd_bwd_f32(int64_t R, int64_t C, float *dlogits, const float *logits,
                        const int64_t *labels, double scale, double *loss_out);
int fd_xent_fwd_bwd_f64(int64_t R, int64_t C, double *dlogits, const double *logits,
                        const int64_t *labels, double scale, double *loss_out);

/* ---- fused training step (fd_fused.c) ---- */
/* One training step of a stack of dense layers, in one call: grad = 0, dact_block = 0; forward
 * (matmul_fwd / act_fwd per layer); xent_fwd_bwd (loss_kind 0, labels) or mse_fwd_bwd (loss_kind 1,
 * target) into dact[last]; backward (matmul_bwd_w, matmul_bwd_x, act_bwd, as a model's kernel-by-kernel
 * step runs them); then fd_adam on the flat (nparams,) blocks with the given scalars. The same kernels
 * in the same order: bit-identical to the kernel-by-kernel step. desc is (nlayers, 4) int64, per layer
 * {type (0 Linear, 1 activation), in, out, activation kind}; w, b, dw, db, act, dact hold one pointer
 * per layer (NULL for an activation's w/b/dw/db, b and db NULL for a Linear without bias); act[i],
 * dact[i] are (rows, out_i); x is (rows, in_0); every dw/db lies in grad, every dact in dact_block
 * (ndact elements). *loss_out = the mean loss before the update. FD_ERR_SIZE / FD_ERR_NULL /
 * FD_ERR_SHAPE / FD_ERR_ALIGN / FD_ERR_ARG (bad layer, loss kind, label, a non-finite loss_scale or
 * Adam scalars outside fd_adam's domain): nothing written. */
int fd_mlp_step_f32(int64_t nlayers, const int64_t *desc, float *const *w, float *const *b,
                    float *const *dw, float *const *db, float *const *act, float *const *dact,
                    int64_t rows, const float *x, int loss_kind, const int64_t *labels,
                    const float *target, double loss_scale, int64_t nparams, float *param,
                    float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq, float *grad,
                    float *dact_block, int64_t ndact, double beta1, double beta2, double eps,
                    double weight_decay, double decay, double step_size,
                    double bias_correction2_sqrt, int amsgrad, int maximize, double *loss_out);
int fd_mlp_step_f64(int64_t nlayers, const int64_t *desc, double *const *w, double *const *b,
                    double *const *dw, double *const *db, double *const *act, double *const *dact,
                    int64_t rows, const double *x, int loss_kind, const int64_t *labels,
                    const double *target, double loss_scale, int64_t nparams, double *param,
                    double *exp_avg, double *exp_avg_sq, double *max_exp_avg_sq, double *grad,
                    double *dact_block, int64_t ndact, double beta1, double beta2, double eps,
                    double weight_decay, double decay, double step_size,
                    double bias_correction2_sqrt, int amsgrad, int maximize, double *loss_out);
/* The same step with fd_sgd (momentum SGD) as the update, over param, momentum_buffer (NULL iff
 * momentum == 0) and grad; the scalars and their domain as fd_sgd's. Bit-identical to the
 * kernel-by-kernel step followed by fd_sgd on the flat blocks. */
int fd_mlp_step_sgd_f32(int64_t nlayers, const int64_t *desc, float *const *w, float *const *b,
                        float *const *dw, float *const *db, float *const *act, float *const *dact,
                        int64_t rows, const float *x, int loss_kind, const int64_t *labels,
                        const float *target, double loss_scale, int64_t nparams, float *param,
                        float *momentum_buffer, float *grad, float *dact_block, int64_t ndact,
                        double lr, double momentum, double dampening, double weight_decay,
                        int nesterov, int maximize, int first_step, double *loss_out);
int fd_mlp_step_sgd_f64(int64_t nlayers, const int64_t *desc, double *const *w, double *const *b,
                        double *const *dw, double *const *db, double *const *act,
                        double *const *dact, int64_t rows, const double *x, int loss_kind,
                        const int64_t *labels, const double *target, double loss_scale,
                        int64_t nparams, double *param, double *momentum_buffer, double *grad,
                        double *dact_block, int64_t ndact, double lr, double momentum,
                        double dampening, double weight_decay, int nesterov, int maximize,
                        int first_step, double *loss_out);

#ifdef __cplusplus
}
#endif

#endif /* FASTDESCENT_H */

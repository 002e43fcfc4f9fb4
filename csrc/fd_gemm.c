/* fd_gemm.c -- the GEMM engine of the dense-layer kernels (see fd_gemm.h), instantiated for
 * float / double and for the portable / AVX2+FMA code paths, the path picked at run time
 * (fd_avx2_active(); no -march flag needed).
 *
 * Blocking (MR x NR micro-tile, MC x KC A block in L2, KC x NC B panel in L3):
 *   AVX2+FMA  f32: 6 x 16, MC 144, KC 256, NC 4080     f64: 6 x 8, MC 72, KC 256, NC 2040
 *   portable  f32: 6 x 8,  MC 120, KC 256, NC 2048     f64: 6 x 4, MC 96, KC 256, NC 2048
 * (the AVX2 ones are BLIS's Zen/Haswell choices: 12 accumulator registers, a 16 KiB B micro-panel
 * and 6 KiB A micro-panel in a 32 KiB L1).
 */
#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200112L
#undef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdint.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fd_internal.h"
#include "fd_gemm.h"

#if FD_X86_DISPATCH
#include <immintrin.h>
#endif

/* OpenMP directives that vanish (without -Wunknown-pragmas noise) in a build without OpenMP */
#ifdef _OPENMP
#define G_OMP(directive) _Pragma(#directive)
#else
#define G_OMP(directive)
#endif

/* ---- portable path ---------------------------------------------------------------------------- */
#define G_AVX2 0
#define G_MR 6
#define G_KC 256

#define GT float
#define GSFX f32_generic
#define G_F64 0
#define G_NR 8
#define G_MC 120
#define G_NC 2048
#include "fd_gemm_impl.h"
#undef GT
#undef GSFX
#undef G_F64
#undef G_NR
#undef G_MC
#undef G_NC

#define GT double
#define GSFX f64_generic
#define G_F64 1
#define G_NR 4
#define G_MC 96
#define G_NC 2048
#include "fd_gemm_impl.h"
#undef GT
#undef GSFX
#undef G_F64
#undef G_NR
#undef G_MC
#undef G_NC
#undef G_AVX2

/* ---- AVX2 + FMA path -------------------------------------------------------------------------- */
#if FD_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define G_AVX2 1

#define GT float
#define GSFX f32_avx2
#define G_F64 0
#define G_NR 16
#define G_MC 144
#define G_NC 4080
#include "fd_gemm_impl.h"
#undef GT
#undef GSFX
#undef G_F64
#undef G_NR
#undef G_MC
#undef G_NC

#define GT double
#define GSFX f64_avx2
#define G_F64 1
#define G_NR 8
#define G_MC 72
#define G_NC 2040
#include "fd_gemm_impl.h"
#undef GT
#undef GSFX
#undef G_F64
#undef G_NR
#undef G_MC
#undef G_NC

#undef G_AVX2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* FD_X86_DISPATCH */

#undef G_MR
#undef G_KC

/* ---- dispatch --------------------------------------------------------------------------------- */
void fd_gemm_f32(const fd_gemm_args *g)
{
    const int nt = fd_threads_now();
#if FD_X86_DISPATCH
    if (fd_avx2_active()) {
        gemm_f32_avx2(g, nt);
        return;
    }
#endif
    gemm_f32_generic(g, nt);
}

void fd_gemm_f64(const fd_gemm_args *g)
{
    const int nt = fd_threads_now();
#if FD_X86_DISPATCH
    if (fd_avx2_active()) {
        gemm_f64_avx2(g, nt);
        return;
    }
#endif
    gemm_f64_generic(g, nt);
}

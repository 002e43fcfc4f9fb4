/* fd_gemm.c -- the GEMM engine of the dense-layer kernels (see fd_gemm.h), instantiated for
 * float / double and for the portable / AVX2+FMA code paths, the path picked at run time
 * (fd_avx2_active(); no -march flag needed).
 *
 * Blocking (MR x NR micro-tile, MC x KC A block in L2, KC x NC B panel in L3):
 *   AVX2+FMA  f32: 6 x 16, MC 144, KC 256, NC 4080     f64: 6 x 8, MC 72, KC 256, NC 2040
 *   AVX-512   f32: 6 x 32, MC 144, KC 256, NC 4064     f64: 6 x 16, MC 72, KC 256, NC 2032
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
#include <string.h>
#include <time.h>

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

/* ---- busy-machine back-off ---------------------------------------------------------------------
 * A parallel region ends only when every thread of its team has arrived, and on a machine whose other
 * cores are busy a team thread can wait a scheduler time slice (milliseconds) for its core, however
 * the work is split: the running thread does the units, then waits for the descheduled one to show
 * up. Each multi-threaded GEMM therefore times itself: the calling thread knows how long it worked and
 * what share of the units it did, so what the whole GEMM would have cost it alone (work / share);
 * when the region took longer than that by over G_STALL_MIN_NS (the team cost more than it gave), the
 * GEMMs of the whole process run on the calling thread alone for a while, then try threads again:
 * 50 ms, doubled up to 2 s for each stall that comes soon (within 4 back-off lengths) after the last
 * back-off ended; each threaded GEMM that ends without a stall halves the length the next stall
 * starts from (below 50 ms: none), and a stall after a longer clean spell starts at 50 ms. A long
 * back-off also keeps the team's threads asleep: OpenMP's threads spin for a while after each region
 * (GOMP_SPINCOUNT: milliseconds here), and under load a spinning thread takes CPU time from the
 * calling one. Results do not depend on it (they do not depend on the thread count). */
#define G_STALL_MIN_NS 50000
#define G_BACKOFF_MIN_NS 50000000
#define G_BACKOFF_MAX_NS 2000000000

static int64_t g_off_until = 0; /* CLOCK_MONOTONIC ns until which GEMMs run on one thread */
static int64_t g_off_len = 0;   /* the current back-off length */
static int64_t g_stalls = 0;    /* stalls seen (for fd_gemm_backoff_stats) */
static int64_t g_backoffs = 0;  /* GEMMs run on one thread because of a back-off */
static int64_t g_regions = 0;   /* multi-threaded GEMM regions run */
static int64_t g_waited = 0;    /* ns the calling threads waited for their teams in stalled regions */
static int g_backoff_on = 1;

#define G_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define G_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

static int64_t gemm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* the team size a GEMM that wants nt > 1 threads gets now */
static int gemm_team(int nt)
{
    if (nt > 1 && G_LOAD(g_backoff_on) && G_LOAD(g_off_until) > gemm_now()) {
        __atomic_fetch_add(&g_backoffs, 1, __ATOMIC_RELAXED);
        return 1;
    }
    return nt;
}

/* after a region of a team of nt > 1 that started at t0, whose calling thread finished at tmain having
 * done `mine` of the `total` units: start a back-off on a stall */
static void gemm_region_done(int nt, int64_t t0, int64_t tmain, int64_t mine, int64_t total)
{
    if (nt <= 1) return;
    const int64_t tend = gemm_now(), work = tmain - t0;
    /* alone, the calling thread would have needed work * total / mine (nothing to compare with if
     * it did no unit: then it was the one held up, not the team) */
    const double alone = mine > 0 ? (double)work * (double)total / (double)mine : (double)(tend - t0);
    const double loss = (double)(tend - t0) - alone;
    __atomic_fetch_add(&g_regions, 1, __ATOMIC_RELAXED);
    if (loss <= G_STALL_MIN_NS) {
        /* a clean region halves the length the next stall starts from: once the load is gone, a
         * stall (another library's threads spinning for a moment) costs 50 ms again, not 2 s */
        const int64_t len = G_LOAD(g_off_len);
        if (len > 0) G_STORE(g_off_len, len / 2 < G_BACKOFF_MIN_NS ? 0 : len / 2);
        return;
    }
    __atomic_fetch_add(&g_stalls, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_waited, tend - tmain, __ATOMIC_RELAXED);
    if (!G_LOAD(g_backoff_on)) return;
    /* doubled if this stall follows the last back-off's end closely (within 4 of its lengths: the
     * load went on), back to the shortest otherwise */
    int64_t len = G_LOAD(g_off_len);
    if (len < G_BACKOFF_MIN_NS || tend - G_LOAD(g_off_until) > 4 * len)
        len = G_BACKOFF_MIN_NS;
    else
        len = len * 2 > G_BACKOFF_MAX_NS ? G_BACKOFF_MAX_NS : len * 2;
    G_STORE(g_off_len, len);
    G_STORE(g_off_until, tend + len);
}

int fd_gemm_backoff(int mode)
{
    if (mode == 0 || mode == 1)
        G_STORE(g_backoff_on, mode);
    else if (mode != -1)
        return FD_ERR_ARG;
    if (mode == 0) G_STORE(g_off_until, 0);
    return G_LOAD(g_backoff_on);
}

void fd_gemm_backoff_stats(int64_t *out)
{
    if (!out) return;
    const int64_t left = G_LOAD(g_off_until) - gemm_now();
    out[0] = G_LOAD(g_stalls);
    out[1] = G_LOAD(g_backoffs);
    out[2] = left > 0 ? left : 0;
    out[3] = G_LOAD(g_regions);
    out[4] = G_LOAD(g_waited);
}

#ifdef _OPENMP
#define G_TID() omp_get_thread_num()
#else
#define G_TID() 0
#endif

/* ---- portable path ---------------------------------------------------------------------------- */
#define G_AVX2 0
#define G_AVX512 0
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
#undef G_AVX512

/* ---- AVX2 + FMA path -------------------------------------------------------------------------- */
#if FD_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define G_AVX2 1
#define G_AVX512 0

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
#undef G_AVX512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ---- AVX-512 path: the AVX2 engine on 512-bit vectors, for the GEMMs alone (the AVX2+FMA path's
 * other kernels stay as they are). Same MR, KC and the same multiply-add chains: the same bits. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
#define G_AVX2 1
#define G_AVX512 1

#define GT float
#define GSFX f32_avx512
#define G_F64 0
#define G_NR 32
#define G_MC 144
#define G_NC 4064
#include "fd_gemm_impl.h"
#undef GT
#undef GSFX
#undef G_F64
#undef G_NR
#undef G_MC
#undef G_NC

#define GT double
#define GSFX f64_avx512
#define G_F64 1
#define G_NR 16
#define G_MC 72
#define G_NC 2032
#include "fd_gemm_impl.h"
#undef GT
#undef GSFX
#undef G_F64
#undef G_NR
#undef G_MC
#undef G_NC

#undef G_AVX2
#undef G_AVX512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* FD_X86_DISPATCH */

#undef G_MR
#undef G_KC

/* ---- dispatch --------------------------------------------------------------------------------- */
static int g_avx512_on = 1; /* fd_gemm_avx512 */

/* 1 if this CPU (and OS) runs the AVX-512 GEMM */
static int gemm_avx512_supported(void)
{
#if FD_X86_DISPATCH
    const unsigned int need = FD_CPU_AVX512F | FD_CPU_AVX2 | FD_CPU_FMA;
    return (fd_cpu_features() & need) == need;
#else
    return 0;
#endif
}

int fd_gemm_avx512(int mode)
{
    if (mode == 1 && !gemm_avx512_supported()) return FD_ERR_UNSUPPORTED;
    if (mode == 0 || mode == 1)
        G_STORE(g_avx512_on, mode);
    else if (mode != -1)
        return FD_ERR_ARG;
    return G_LOAD(g_avx512_on) && gemm_avx512_supported() && fd_avx2_active();
}

/* The AVX-512 engine on the AVX2+FMA path, for outputs at least one 512-bit strip wide (narrower
 * ones, e.g. batches of 16 x 16 matrices, would compute twice the columns they keep). */
static int gemm_use_avx512(const fd_gemm_args *g, int64_t nr)
{
    return g->n >= nr && G_LOAD(g_avx512_on) && gemm_avx512_supported();
}

static void gemm_f32_dispatch(const fd_gemm_args *g)
{
    const int nt = fd_threads_now();
#if FD_X86_DISPATCH
    if (fd_avx2_active()) {
        if (gemm_use_avx512(g, 32))
            gemm_f32_avx512(g, nt);
        else
            gemm_f32_avx2(g, nt);
        return;
    }
#endif
    gemm_f32_generic(g, nt);
}

void fd_gemm_f32(const fd_gemm_args *g)
{
    const int flush = fd_flush_enter(); /* the calling thread; the regions' threads set their own */
    const unsigned csr = fd_flush_begin(flush);
    gemm_f32_dispatch(g);
    fd_flush_end(flush, csr);
    fd_flush_leave();
}

static void gemm_f64_dispatch(const fd_gemm_args *g)
{
    const int nt = fd_threads_now();
#if FD_X86_DISPATCH
    if (fd_avx2_active()) {
        if (gemm_use_avx512(g, 16))
            gemm_f64_avx512(g, nt);
        else
            gemm_f64_avx2(g, nt);
        return;
    }
#endif
    gemm_f64_generic(g, nt);
}

void fd_gemm_f64(const fd_gemm_args *g)
{
    const int flush = fd_flush_enter(); /* the calling thread; the regions' threads set their own */
    const unsigned csr = fd_flush_begin(flush);
    gemm_f64_dispatch(g);
    fd_flush_end(flush, csr);
    fd_flush_leave();
}

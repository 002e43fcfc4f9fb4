/* fd_common.c -- status strings, version, thread settings, CPU features and the work-distribution
 * drivers shared by every kernel (see fd_internal.h). The only file with OpenMP pragmas.
 *
 * The thresholds: a kernel goes multi-threaded only with at least `grain` elements per thread (the
 * kernel's default or fd_set_parallel_grain's value), reductions only with at least two chunks.
 *
 * Work distribution over a table of ntensors tensors with sizes[i] elements (total = sum):
 *   element-wise kernels: the flattened (tensor, element) space is cut into equal pieces (multiples
 *     of 16 elements, ~16 per thread) that threads take dynamically; a piece may span many tiny
 *     tensors or be part of one huge tensor; every (tensor, offset, length) inside it is visited;
 *   reductions: nchunks = fd_nchunks(total) fixed ranges (a function of total only); threads take
 *     whole chunks dynamically; the caller combines the per-chunk partials in chunk order.
 */
#include "fd_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if !defined(FASTDESCENT_VERSION_STRING) /* fastdescent_version.h, generated from fastdescent/_version.py */
#error "fastdescent_version.h lacks FASTDESCENT_VERSION_STRING (csrc/Makefile and csrc/cffi_build.py generate it)"
#endif

/* Settings are read by every kernel call and may be written from any thread: relaxed atomics. */
#if defined(__GNUC__) || defined(__clang__)
#define FD_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define FD_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#else
#define FD_LOAD(x) (x)
#define FD_STORE(x, v) ((x) = (v))
#endif

#define FD_STR_(x) #x
#define FD_STR(x) FD_STR_(x)

/* ---------------------------------------------------------------------------- status, version */
const char *fd_strerror(int status)
{
    switch (status) {
    case FD_OK: return "success";
    case FD_ERR_NULL: return "a required pointer argument is NULL";
    case FD_ERR_SIZE: return "a count or size is negative or too large";
    case FD_ERR_ARG: return "an argument is outside its domain";
    case FD_ERR_SHAPE: return "shapes or batch sizes do not fit together";
    case FD_ERR_UNSUPPORTED: return "not supported by this build or CPU";
    case FD_ERR_ALIGN: return "an array is not aligned to its element type";
    default: return "unknown fastdescent status";
    }
}

const char *fd_version(void) { return FASTDESCENT_VERSION_STRING; }

const char *fd_build_info(void)
{
    return "fastdescent " FASTDESCENT_VERSION_STRING
#if defined(__clang__)
           "; clang " __clang_version__
#elif defined(__GNUC__)
           "; gcc " __VERSION__
#elif defined(_MSC_VER)
           "; msvc " FD_STR(_MSC_VER)
#endif
#ifdef _OPENMP
           "; OpenMP " FD_STR(_OPENMP)
#else
           "; no OpenMP"
#endif
#if FD_X86_DISPATCH
           "; paths generic+avx2-fma (+avx512 gemm)"
#else
           "; path generic"
#endif
#ifdef __OPTIMIZE__
           "; optimized"
#endif
        ;
}

/* ---------------------------------------------------------------------------- threads */
static int g_threads = 0; /* 0: OpenMP's default */

/* Fork: libgomp's thread pool does not survive fork(). A child of a process that ever ran an OpenMP
 * team hangs forever in the next parallel region (it waits for pool threads that only exist in the
 * parent). The child handler below marks every process created by fork() after this library was
 * loaded, and in such a process fd_threads_now() is 1: the kernels run on the calling thread, never
 * entering a parallel region, and give the same results (they do not depend on the thread count).
 * The mark is inherited by further forks; exec() clears it. */
static int g_forked = 0;

#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
#include <pthread.h>
static void fd_atfork_child(void) { g_forked = 1; }
#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor)) static void fd_register_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, fd_atfork_child);
}
#endif
#endif

int fd_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

int fd_get_num_threads(void)
{
#ifdef _OPENMP
    if (FD_LOAD(g_forked)) return 1;
    int n = FD_LOAD(g_threads);
    if (n > 0) return n;
    n = omp_get_max_threads();
    if (n > FD_MAX_THREADS) n = FD_MAX_THREADS;
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}

int fd_set_num_threads(int n)
{
    if (n < 0 || n > FD_MAX_THREADS) return FD_ERR_ARG;
    FD_STORE(g_threads, n);
    return FD_OK;
}

int fd_forked_child(void) { return FD_LOAD(g_forked); }

int fd_threads_now(void) { return fd_get_num_threads(); }

static int g_flush_denormal = 0; /* fd_set_flush_denormal; read atomically by every kernel call */

int fd_set_flush_denormal(int on)
{
    if (on && !FD_HAVE_MXCSR) return 0;
    __atomic_store_n(&g_flush_denormal, on ? 1 : 0, __ATOMIC_SEQ_CST);
    return 1;
}

int fd_get_flush_denormal(void) { return __atomic_load_n(&g_flush_denormal, __ATOMIC_SEQ_CST); }

#if defined(_MSC_VER)
#define FD_THREAD_LOCAL __declspec(thread)
#else
#define FD_THREAD_LOCAL __thread
#endif
static FD_THREAD_LOCAL int t_flush_depth = 0; /* kernel calls in progress on this thread */
static FD_THREAD_LOCAL int t_flush_on = 0;    /* ... and the outermost one's reading */
static FD_THREAD_LOCAL unsigned t_flush_csr = 0; /* ... and its MXCSR when it began (flush on) */

int fd_flush_enter(void)
{
    if (t_flush_depth++ == 0) {
        t_flush_on = __atomic_load_n(&g_flush_denormal, __ATOMIC_RELAXED);
#if FD_HAVE_MXCSR
        if (t_flush_on) t_flush_csr = _mm_getcsr();
#endif
    }
    return t_flush_on;
}

unsigned fd_flush_spawn_begin(int flush)
{
#if FD_HAVE_MXCSR
    if (!flush || t_flush_depth == 0) return 0u;
    const unsigned now = _mm_getcsr();
    if (now != t_flush_csr) _mm_setcsr(t_flush_csr);
    return now;
#else
    (void)flush;
    return 0u;
#endif
}

void fd_flush_spawn_end(int flush, unsigned saved)
{
#if FD_HAVE_MXCSR
    if (flush && t_flush_depth > 0 && saved != t_flush_csr) _mm_setcsr(saved);
#else
    (void)flush;
    (void)saved;
#endif
}

void fd_flush_leave(void) { t_flush_depth--; }

int fd_flush_current(void) { return t_flush_depth > 0 ? t_flush_on : 0; }

static int64_t g_grain = 0; /* 0: per-kernel defaults */

int fd_set_parallel_grain(int64_t n)
{
    if (n < 0) return FD_ERR_ARG;
    FD_STORE(g_grain, n);
    return FD_OK;
}

int64_t fd_get_parallel_grain(void) { return FD_LOAD(g_grain); }

/* ---------------------------------------------------------------------------- CPU features */
static unsigned int detect_features(void)
{
    unsigned int f = 0;
#if FD_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse2")) f |= FD_CPU_SSE2;
    if (__builtin_cpu_supports("avx")) f |= FD_CPU_AVX;
    if (__builtin_cpu_supports("avx2")) f |= FD_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= FD_CPU_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= FD_CPU_AVX512F;
#elif defined(__x86_64__) || defined(_M_X64)
    f |= FD_CPU_SSE2; /* part of x86-64 */
#elif defined(__aarch64__) || defined(__ARM_NEON)
    f |= FD_CPU_NEON;
#endif
    return f;
}

static int g_features = -1; /* -1: not detected yet */
static int g_path = -1;     /* -1: not chosen yet */

unsigned int fd_cpu_features(void)
{
    int f = FD_LOAD(g_features);
    if (f < 0) {
        f = (int)detect_features();
        FD_STORE(g_features, f);
    }
    return (unsigned int)f;
}

static int best_path(void)
{
#if FD_X86_DISPATCH
    unsigned int f = fd_cpu_features();
    if ((f & FD_CPU_AVX2) && (f & FD_CPU_FMA)) return FD_PATH_AVX2_FMA;
#endif
    return FD_PATH_GENERIC;
}

int fd_get_simd_path(void)
{
    int p = FD_LOAD(g_path);
    if (p < 0) {
        p = best_path();
        FD_STORE(g_path, p);
    }
    return p;
}

int fd_set_simd_path(int path)
{
    if (path == -1) {
        FD_STORE(g_path, best_path());
        return FD_OK;
    }
    if (path != FD_PATH_GENERIC && path != FD_PATH_AVX2_FMA) return FD_ERR_ARG;
    if (path == FD_PATH_AVX2_FMA && best_path() != FD_PATH_AVX2_FMA) return FD_ERR_UNSUPPORTED;
    FD_STORE(g_path, path);
    return FD_OK;
}

int fd_avx2_active(void) { return fd_get_simd_path() == FD_PATH_AVX2_FMA; }

/* ---------------------------------------------------------------------------- argument checks */
int fd_check_sizes(int64_t ntensors, const int64_t *sizes, int64_t *total)
{
    int64_t sum = 0;
    if (ntensors < 0) return FD_ERR_SIZE;
    if (ntensors > 0 && sizes == NULL) return FD_ERR_NULL;
    if (!fd_aligned(sizes, sizeof(int64_t))) return FD_ERR_ALIGN;
    for (int64_t i = 0; i < ntensors; i++) {
        /* sum <= FD_MAX_ELEMS here, so the subtraction cannot overflow */
        if (sizes[i] < 0 || sizes[i] > FD_MAX_ELEMS - sum) return FD_ERR_SIZE;
        sum += sizes[i];
    }
    *total = sum;
    return FD_OK;
}

int fd_check_column(int64_t ntensors, const int64_t *sizes, const void *const *col, size_t elem)
{
    if (ntensors == 0) return FD_OK;
    if (col == NULL) return FD_ERR_NULL;
    if (!fd_aligned(col, sizeof(void *))) return FD_ERR_ALIGN;
    int bad = 0;
    uintptr_t mis = 0;
    for (int64_t i = 0; i < ntensors; i++) {
        int live = sizes[i] > 0;
        bad |= (col[i] == NULL) & live;
        mis |= (uintptr_t)col[i] & (uintptr_t)(elem - 1) & ((uintptr_t)0 - (uintptr_t)live);
    }
    if (bad) return FD_ERR_NULL;
    return mis ? FD_ERR_ALIGN : FD_OK;
}

/* ---------------------------------------------------------------------------- work distribution */
/* Start of part k of n equal parts of [0, total), rounded down to 16 elements (a 64-byte line of
 * float32) except at the ends. Exact in 64-bit integers for any total. */
static int64_t split(int64_t total, int64_t k, int64_t n)
{
    if (k <= 0) return 0;
    if (k >= n) return total;
    int64_t q = total / n, r = total % n;
    int64_t x = q * k + (r * k) / n;
    return x & ~(int64_t)15;
}

/* A cursor over the tensors: tensor t starts at flattened position start. Visit the pieces of the
 * tensors that fall in [lo, hi), moving the cursor forward (ranges visited in increasing order cost
 * O(ntensors) in all; a range before the cursor restarts it from the first tensor). */
typedef struct {
    int64_t t, start;
} cursor;

static void seek(cursor *cur, int64_t ntensors, const int64_t *sizes, int64_t lo)
{
    if (lo < cur->start) cur->t = cur->start = 0;
    while (cur->t < ntensors && cur->start + sizes[cur->t] <= lo) cur->start += sizes[cur->t++];
}

static void run_range(cursor *cur, int64_t ntensors, const int64_t *sizes, int64_t lo, int64_t hi,
                      fd_seg_fn fn, const void *ctx)
{
    seek(cur, ntensors, sizes, lo);
    for (int64_t t = cur->t, start = cur->start; t < ntensors && start < hi; start += sizes[t++]) {
        int64_t n = sizes[t];
        int64_t a = lo > start ? lo - start : 0;
        int64_t b = hi - start < n ? hi - start : n;
        if (b > a) fn(ctx, t, a, b - a);
    }
}

static void run_range_acc(cursor *cur, int64_t ntensors, const int64_t *sizes, int64_t lo,
                          int64_t hi, fd_chunk_fn fn, const void *ctx, double *acc)
{
    seek(cur, ntensors, sizes, lo);
    for (int64_t t = cur->t, start = cur->start; t < ntensors && start < hi; start += sizes[t++]) {
        int64_t n = sizes[t];
        int64_t a = lo > start ? lo - start : 0;
        int64_t b = hi - start < n ? hi - start : n;
        if (b > a) fn(ctx, t, a, b - a, acc);
    }
}

/* The grain in force for a kernel whose default is `min_per_thread`. */
static int64_t grain(int64_t min_per_thread)
{
    int64_t g = fd_get_parallel_grain();
    return g > 0 ? g : min_per_thread;
}

/* Threads worth using for `total` elements at `min_per_thread` each (>= 1). */
static int threads_for(int64_t total, int64_t min_per_thread)
{
#ifdef _OPENMP
    if (total / 2 < min_per_thread) return 1;
    int64_t cap = total / min_per_thread;
    int nth = fd_threads_now();
    return (int64_t)nth > cap ? (int)cap : nth;
#else
    (void)total;
    (void)min_per_thread;
    return 1;
#endif
}

/* Element-wise kernels: the flattened space is cut into pieces of `chunk` elements handed out
 * dynamically (a thread that the OS descheduled does not hold the others up at the end): about
 * FD_DYN_PER_THREAD pieces per thread, at least min_per_thread/2 elements and a multiple of 16
 * (a 64-byte line of float32) each. */
#define FD_DYN_PER_THREAD 16

/* Visit, for the flattened range [lo, hi), the elements of each tensor whose `align`-element unit
 * (counted from the tensor's start) starts in the range: every unit is visited by exactly the one
 * range holding its first element, and pieces start on unit boundaries. align == 1: run_range. */
static void run_range_aligned(cursor *cur, int64_t ntensors, const int64_t *sizes, int64_t lo,
                              int64_t hi, int64_t align, fd_seg_fn fn, const void *ctx)
{
    seek(cur, ntensors, sizes, lo);
    for (int64_t t = cur->t, start = cur->start; t < ntensors && start < hi; start += sizes[t++]) {
        int64_t n = sizes[t];
        int64_t a = lo > start ? (lo - start + align - 1) / align * align : 0;
        int64_t b = (hi - start + align - 1) / align * align;
        if (b > n) b = n;
        if (b > a) fn(ctx, t, a, b - a);
    }
}

static void run_dynamic(int64_t ntensors, const int64_t *sizes, int64_t total,
                        int64_t min_per_thread, int64_t align, fd_seg_fn fn, const void *ctx)
{
    int nth = threads_for(total, min_per_thread);
    const int flush = fd_flush_enter();
    if (nth <= 1) {
        const unsigned csr = fd_flush_begin(flush);
        for (int64_t t = 0; t < ntensors; t++)
            if (sizes[t] > 0) fn(ctx, t, 0, sizes[t]);
        fd_flush_end(flush, csr);
        fd_flush_leave();
        return;
    }
#ifdef _OPENMP
    int64_t chunk = total / ((int64_t)nth * FD_DYN_PER_THREAD);
    if (chunk < min_per_thread / 2) chunk = min_per_thread / 2;
    if (chunk < 16) chunk = 16;
    chunk = (chunk + 15) & ~(int64_t)15;
    int64_t nchunks = (total + chunk - 1) / chunk;
    const unsigned spawn = fd_flush_spawn_begin(flush);
#pragma omp parallel num_threads(nth)
    {
        const unsigned csr = fd_flush_begin(flush);
        cursor cur = {0, 0};
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * chunk, hi = lo + chunk < total ? lo + chunk : total;
            if (align > 1) run_range_aligned(&cur, ntensors, sizes, lo, hi, align, fn, ctx);
            else run_range(&cur, ntensors, sizes, lo, hi, fn, ctx);
        }
        fd_flush_end(flush, csr);
    }
    fd_flush_spawn_end(flush, spawn);
#else
    (void)align;
#endif
    fd_flush_leave();
}

void fd_run_segments(int64_t ntensors, const int64_t *sizes, int64_t total, int64_t min_per_thread,
                     fd_seg_fn fn, const void *ctx)
{
    run_dynamic(ntensors, sizes, total, grain(min_per_thread), 1, fn, ctx);
}

void fd_run_segments_aligned(int64_t ntensors, const int64_t *sizes, int64_t total,
                             int64_t min_per_thread, int64_t align, fd_seg_fn fn, const void *ctx)
{
    run_dynamic(ntensors, sizes, total, grain(min_per_thread), align > 1 ? align : 1, fn, ctx);
}

int64_t fd_chunk_start(int64_t total, int64_t c, int64_t nchunks) { return split(total, c, nchunks); }

int64_t fd_nchunks(int64_t total)
{
    int64_t n = (total + FD_CHUNK_MIN - 1) / FD_CHUNK_MIN;
    if (n < 1) n = 1;
    if (n > FD_MAX_CHUNKS) n = FD_MAX_CHUNKS;
    return n;
}

void fd_run_chunks(int64_t ntensors, const int64_t *sizes, int64_t total, fd_chunk_fn fn,
                   const void *ctx, double *acc)
{
    int64_t nchunks = fd_nchunks(total);
    int nth = threads_for(total, grain(FD_PAR_MIN_LIGHT));
    if ((int64_t)nth > nchunks) nth = (int)nchunks;
    for (int64_t i = 0; i < nchunks * FD_ACC_WORDS; i++) acc[i] = 0.0;
    const int flush = fd_flush_enter();
    if (nth <= 1) {
        const unsigned csr = fd_flush_begin(flush);
        cursor cur = {0, 0};
        for (int64_t c = 0; c < nchunks; c++)
            run_range_acc(&cur, ntensors, sizes, split(total, c, nchunks),
                          split(total, c + 1, nchunks), fn, ctx, acc + c * FD_ACC_WORDS);
        fd_flush_end(flush, csr);
        fd_flush_leave();
        return;
    }
#ifdef _OPENMP
    const unsigned spawn = fd_flush_spawn_begin(flush);
#pragma omp parallel num_threads(nth)
    {
        const unsigned csr = fd_flush_begin(flush);
        cursor cur = {0, 0};
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t c = 0; c < nchunks; c++)
            run_range_acc(&cur, ntensors, sizes, split(total, c, nchunks),
                          split(total, c + 1, nchunks), fn, ctx, acc + c * FD_ACC_WORDS);
        fd_flush_end(flush, csr);
    }
    fd_flush_spawn_end(flush, spawn);
#endif
    fd_flush_leave();
}

/* fd_internal.h -- shared machinery of the fastdescent kernels (not part of the public ABI).
 *
 * - Work distribution: fd_run_segments() splits the flattened (tensor, element) space of a tensor
 *   table into one contiguous range per thread and calls a segment function for every piece of a
 *   tensor that falls in a range; fd_run_chunks() does the same for reductions, over a number of
 *   chunks that depends only on the table (never on the thread count), so per-chunk partials combined
 *   in chunk order give the same result with 1 or N threads.
 * - Code paths: FD_MULTIVERSION compiles an always-inline body twice, for the baseline target and for
 *   AVX2+FMA (x86-64 GCC/clang only), and fd_avx2_active() picks one at run time. No -march needed.
 * - Argument checks shared by the kernels (null pointers, negative or overflowing sizes, misaligned
 *   arrays, scalars outside their domain), all O(1) per scalar and O(ntensors) per table.
 */
#ifndef FD_INTERNAL_H
#define FD_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastdescent.h"

#if defined(__GNUC__) || defined(__clang__)
#define FD_INLINE static inline __attribute__((always_inline))
#define FD_UNUSED __attribute__((unused))
#else
#define FD_INLINE static inline
#define FD_UNUSED
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define FD_RESTRICT __restrict
#else
#define FD_RESTRICT restrict
#endif

/* AVX2+FMA multi-versioning: only where the compiler has the target attribute and the CPU check. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FD_NO_DISPATCH)
#define FD_X86_DISPATCH 1
#define FD_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define FD_X86_DISPATCH 0
#endif

/* FD_EXACT_FP, placed after the includes of a kernel file, turns off multiply-add contraction for
 * the rest of the file: every code path then performs exactly the IEEE operations written, in the
 * NumPy reference's order, so the generic and AVX2 paths give identical bits (and the reference's). */
#if defined(__clang__)
#define FD_EXACT_FP _Pragma("STDC FP_CONTRACT OFF")
#elif defined(__GNUC__)
#define FD_EXACT_FP _Pragma("GCC optimize(\"fp-contract=off\")")
#else
#define FD_EXACT_FP
#endif

/* A segment function processes elements [off, off+len) of tensor t; ctx holds the kernel's
 * column pointer arrays and pre-rounded scalars. */
typedef void (*fd_seg_fn)(const void *ctx, int64_t t, int64_t off, int64_t len);

/* A chunk function accumulates elements [off, off+len) of tensor t into the partial `acc` of one
 * chunk (the layout of acc is the kernel's business; FD_ACC_WORDS doubles per chunk). */
#define FD_ACC_WORDS 4
typedef void (*fd_chunk_fn)(const void *ctx, int64_t t, int64_t off, int64_t len, double *acc);

/* Most chunks a reduction uses, and the fewest elements per chunk. */
#define FD_MAX_CHUNKS 256
#define FD_CHUNK_MIN 16384

/* Fewest elements per thread before a kernel goes multi-threaded, by kernel weight (the default
 * grain; fd_set_parallel_grain overrides both). Waking a sleeping OpenMP team costs tens of
 * microseconds (much more on an oversubscribed machine), about what one core needs for 50k Adam
 * elements in cache, so smaller tables run on the calling thread. */
#define FD_PAR_MIN_LIGHT 131072
#define FD_PAR_MIN_HEAVY 65536

/* Threads a call may use (>= 1; 1 in a process made by fork(), see fd_common.c). */
int fd_threads_now(void);

/* The subnormal flush of fd_set_flush_denormal, per thread and per call: `on` is read once per
 * kernel call and handed to its parallel regions, whose threads each set and restore their own
 * MXCSR. begin returns the thread's previous MXCSR for end.
 * fd_flush_enter/fd_flush_leave bracket a kernel call on the calling thread: the outermost call
 * reads the setting, nested ones (fd_mlp_step's GEMMs and element-wise passes, a GEMM's regions)
 * get the same answer, so a call never mixes flushed and unflushed work when another thread
 * toggles the setting meanwhile. fd_flush_current: the answer of the call in progress on this
 * thread (read before a parallel region, handed to its threads).
 * fd_flush_spawn_begin/end bracket each parallel region on the calling thread of a flushed call:
 * OpenMP starts a region's threads at its entry and a new thread inherits its creator's MXCSR, so
 * the creator goes back to the MXCSR it had when the call began (the threads are born with the
 * process's mode, not FTZ|DAZ for good) and gets the flushed one back after the region. */
int fd_flush_enter(void);
void fd_flush_leave(void);
int fd_flush_current(void);
unsigned fd_flush_spawn_begin(int flush);
void fd_flush_spawn_end(int flush, unsigned saved);
#if defined(__x86_64__) || defined(_M_X64) || (defined(__SSE__) && !defined(__aarch64__))
#include <xmmintrin.h>
#define FD_HAVE_MXCSR 1
/* MXCSR's sticky flags for a denormal operand (DE, bit 1) and an underflow (UE, bit 4): set by an
 * instruction that met a subnormal input or made a tiny result. */
#define FD_SN_FLAGS 0x12u
/* Without the flush, begin clears DE and UE for the call if they
 * are set and end puts them back (with whatever the call raised): the subnormal routes
 * (fd_subnormal.h) read them after each plain stretch to learn whether it met a subnormal, and
 * clearing them there instead would cost two MXCSR writes per tensor segment whenever the caller's
 * DE is set -- the usual state (NumPy clears the other flags before its ufuncs but not DE, and a
 * step that met a subnormal leaves it set): 10,000 tensors of 8 elements, 1.85 ms a step against
 * 0.19 ms. One read per thread and call when they are clear. */
static inline unsigned fd_flush_begin(int on)
{
    const unsigned old = _mm_getcsr();
    if (on) _mm_setcsr(old | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    else if (old & FD_SN_FLAGS) _mm_setcsr(old & ~FD_SN_FLAGS);
    return old;
}
static inline void fd_flush_end(int on, unsigned old)
{
    if (on) _mm_setcsr(old);
    else if (old & FD_SN_FLAGS) _mm_setcsr(_mm_getcsr() | (old & FD_SN_FLAGS));
}
#else
#define FD_HAVE_MXCSR 0
static inline unsigned fd_flush_begin(int on) { (void)on; return 0u; }
static inline void fd_flush_end(int on, unsigned old) { (void)on; (void)old; }
#endif
/* A function-long flush scope: FD_FLUSH_SCOPE(s); at the top of a kernel entry enters the call
 * (fd_flush_enter), sets the flush if this call flushes, and on every return, early error returns
 * included, restores the thread's MXCSR and leaves the call. */
typedef struct { int on; unsigned csr; } fd_flush_scope;
static inline fd_flush_scope fd_flush_scope_begin(void)
{
    fd_flush_scope s;
    s.on = fd_flush_enter();
    s.csr = fd_flush_begin(s.on);
    return s;
}
static inline void fd_flush_scope_end(fd_flush_scope *s)
{
    fd_flush_end(s->on, s->csr);
    fd_flush_leave();
}
#define FD_FLUSH_SCOPE(name) \
    fd_flush_scope name __attribute__((cleanup(fd_flush_scope_end))) = fd_flush_scope_begin()
/* Nonzero in a process made by fork() after the library was loaded (kernels stay single-threaded). */
int fd_forked_child(void);

/* FD_ERR_ARG unless fd_adam's scalars are in their domain (fastdescent.h); shared with fd_fused.c. */
int fd_adam_check_scalars(double beta1, double beta2, double eps, double weight_decay, double decay,
                          double step_size, double bias_correction2_sqrt);
/* FD_ERR_ARG unless fd_sgd's scalars are in their domain (fastdescent.h); shared with fd_fused.c. */
int fd_sgd_check_scalars(double lr, double momentum, double dampening, double weight_decay,
                         int nesterov);

/* Run fn over every element of the table: on the calling thread when total < 2*min_per_thread
 * (or one thread is allowed), else on min(threads, total/min_per_thread) threads. */
void fd_run_segments(int64_t ntensors, const int64_t *sizes, int64_t total, int64_t min_per_thread,
                     fd_seg_fn fn, const void *ctx);

/* Split the table into nchunks = fd_nchunks(total) contiguous chunks, run fn over each (threads take
 * whole chunks), leaving chunk c's partial in acc[c*FD_ACC_WORDS ...] (zeroed first). */
int64_t fd_nchunks(int64_t total);
void fd_run_chunks(int64_t ntensors, const int64_t *sizes, int64_t total, fd_chunk_fn fn,
                   const void *ctx, double *acc);
/* First flattened element of chunk c of that split (c = nchunks gives total): for kernels that
 * combine per-chunk partials per tensor (fd_lamb.c). */
int64_t fd_chunk_start(int64_t total, int64_t c, int64_t nchunks);

/* Nonzero when the AVX2+FMA path is compiled in, supported and selected. */
int fd_avx2_active(void);

/* Most elements one table, array or matrix product may hold: 2^59 (any byte count of them fits in an
 * int64 and the index arithmetic of the drivers cannot overflow). Larger -> FD_ERR_SIZE. */
#define FD_MAX_ELEMS ((int64_t)1 << 59)

/* Check ntensors/sizes and compute the total element count: FD_ERR_SIZE for negatives or a total
 * above FD_MAX_ELEMS (never a signed overflow), FD_ERR_NULL for a NULL sizes array when
 * ntensors > 0, FD_ERR_ALIGN for a sizes array not aligned to int64_t. */
int fd_check_sizes(int64_t ntensors, const int64_t *sizes, int64_t *total);
/* Check a column of elements of `elem` bytes (a power of two): FD_ERR_NULL if the pointer array is
 * NULL (ntensors > 0) or a tensor with a nonzero size has a NULL data pointer; FD_ERR_ALIGN if the
 * pointer array is misaligned or a tensor with a nonzero size has a data pointer that is not a
 * multiple of `elem`. */
int fd_check_column(int64_t ntensors, const int64_t *sizes, const void *const *col, size_t elem);

/* p is a multiple of `align` (a power of two); NULL is aligned. */
static inline int fd_aligned(const void *p, size_t align)
{
    return ((uintptr_t)p & (uintptr_t)(align - 1)) == 0;
}
/* FD_ERR_NULL if p is NULL and count > 0, FD_ERR_ALIGN if p is not aligned to `align`. */
static inline int fd_check_ptr(const void *p, int64_t count, size_t align)
{
    if (count > 0 && p == NULL) return FD_ERR_NULL;
    return fd_aligned(p, align) ? FD_OK : FD_ERR_ALIGN;
}
/* a * b for a, b >= 0 into *out: FD_ERR_SIZE if the product exceeds FD_MAX_ELEMS. */
static inline int fd_mul_size(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) return FD_ERR_SIZE;
    if (a != 0 && b > FD_MAX_ELEMS / a) return FD_ERR_SIZE;
    *out = a * b;
    return FD_OK;
}

/* x with its sign bit flipped when mask is the sign bit (0: x itself): maximize's negation of a
 * gradient, done on the bits so that the compiler cannot fold it into a later subtraction (which
 * would give a NaN gradient the other sign than the NumPy reference's). */
static inline float fd_flip_f32(float x, uint32_t mask)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u ^= mask;
    memcpy(&x, &u, sizeof u);
    return x;
}
static inline double fd_flip_f64(double x, uint64_t mask)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    u ^= mask;
    memcpy(&x, &u, sizeof u);
    return x;
}

/* Scalar domains (NaN fails every one of them). */
static inline int fd_finite(double x) { return isfinite(x) != 0; }
static inline int fd_nonneg(double x) { return x >= 0.0 && isfinite(x); }  /* finite, >= 0 */
static inline int fd_unit(double x) { return x >= 0.0 && x < 1.0; }        /* [0, 1) */
/* return FD_ERR_ARG unless cond */
#define FD_REQUIRE(cond)                      \
    do {                                      \
        if (!(cond)) return FD_ERR_ARG;       \
    } while (0)

/* FD_MULTIVERSION(NAME, PARAMS, ARGS) defines `static void NAME_generic PARAMS` and, on x86 builds,
 * `NAME_avx2 PARAMS` (compiled for AVX2+FMA), both made from the always-inline `NAME_body ARGS`;
 * FD_PICK(NAME) is the one to call on this CPU (a function pointer). */
#if FD_X86_DISPATCH
#define FD_MULTIVERSION_(NAME, PARAMS, ARGS)                                 \
    static void NAME##_generic PARAMS { NAME##_body ARGS; }                  \
    FD_TARGET_AVX2 static void NAME##_avx2 PARAMS { NAME##_body ARGS; }
#define FD_PICK_(NAME) (fd_avx2_active() ? NAME##_avx2 : NAME##_generic)
#else
#define FD_MULTIVERSION_(NAME, PARAMS, ARGS)                                 \
    static void NAME##_generic PARAMS { NAME##_body ARGS; }
#define FD_PICK_(NAME) (NAME##_generic)
#endif
/* (one level of indirection so that NAME may itself be a macro call such as FD_S(adam_seg)) */
#define FD_MULTIVERSION(NAME, PARAMS, ARGS) FD_MULTIVERSION_(NAME, PARAMS, ARGS)
#define FD_PICK(NAME) FD_PICK_(NAME)

/* Name mangling for the typed half of a kernel file: FD_S(adam_seg) -> adam_seg_f32 / _f64. The
 * kernel files define FD_T (element type), FD_SFX (f32/f64) and FD_SQRT, then include their typed
 * part once per type (see fd_adam.c). */
#define FD_CAT_(a, b) a##_##b
#define FD_CAT(a, b) FD_CAT_(a, b)
#define FD_S(name) FD_CAT(name, FD_SFX)
/* Name of the always-inline body behind FD_MULTIVERSION(FD_S(name), ...): name_f32_body. */
#define FD_BODY(name) FD_CAT(FD_S(name), body)

/* The standard prologue of a multi-tensor kernel: checked sizes, then columns. */
#define FD_CHECK(expr)                 \
    do {                               \
        int fd_rc_ = (expr);           \
        if (fd_rc_ != FD_OK) return fd_rc_; \
    } while (0)

#define FD_COL(c) ((const void *const *)(c))

/* ---- the mixed-precision step's view of a rule (fd_mixed.c) ----
 * fd_<rule>_mixed_setup(sc, nsc, r) checks the rule's float32 scalars (the vector `sc` of nsc
 * doubles, in the order fd_mixed_step documents in fastdescent.h), rounds them into r->ctx exactly
 * as fd_<rule>_f32 does, and sets r->apply to the rule's float32 element loop on one span (the same
 * loop as fd_<rule>_f32's, so the same bits) and r->needs to the state columns (bit k: column k in
 * contract order) that the scalars require. FD_ERR_ARG for a wrong count or a scalar outside the
 * float32 kernel's domain. The absent columns of a span are NULL and never touched. */
typedef void (*fd_span_fn)(const void *ctx, int64_t n, float *p, const float *g, float *s0,
                           float *s1, float *s2);
typedef struct {
    union {
        double align_;
        void *ptr_;
        unsigned char bytes[192];
    } ctx;
    fd_span_fn apply;
    unsigned needs;
} fd_mixed_rule;
int fd_adam_mixed_setup(const double *sc, int64_t nsc, fd_mixed_rule *r);
int fd_sgd_mixed_setup(const double *sc, int64_t nsc, fd_mixed_rule *r);
int fd_rmsprop_mixed_setup(const double *sc, int64_t nsc, fd_mixed_rule *r);

/* As fd_run_segments, but every piece of a tensor starts at a multiple of `align` elements from
 * the tensor's start (and is a whole number of `align` units, but for the tensor's last one): for
 * kernels whose work unit is a block (fd_mixed.c's 8-bit blocks). */
void fd_run_segments_aligned(int64_t ntensors, const int64_t *sizes, int64_t total,
                             int64_t min_per_thread, int64_t align, fd_seg_fn fn, const void *ctx);

#endif /* FD_INTERNAL_H */

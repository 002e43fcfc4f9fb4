/* test_nn_matmul.c -- C tests of the dense-layer matmul kernels (fd_matmul_*): parity with a float64
 * triple loop on shapes at the edges of every block size (micro-tile 6 x 16 / 6 x 8 / 6 x 4, MC, KC
 * 256, NC), Bw == 1 and Bw == B, with and without bias, accumulation, every code path (generic,
 * AVX2+FMA, and its AVX-512 GEMM where the CPU has it), f32 and
 * f64; bit-identical results for 1 and 2 threads and from run to run (the busy-machine back-off
 * off, so that the threaded paths run); error codes.
 * Prints one line per failure and "N passed, N failed"; exit status 1 on failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastdescent.h"

#define FD_TEST_SEED 88172645463325252ull
#include "fd_check.h"

typedef struct {
    int64_t B, Bw, M, K, N;
} shape;

/* float64 references, with the sum of |terms| for the error bound */
static void ref_fwd(shape s, const double *x, const double *w, const double *b, double *y, double *mag)
{
    for (int64_t i = 0; i < s.B; i++) {
        const double *wi = w + (s.Bw == 1 ? 0 : i) * s.K * s.N;
        const double *bi = b ? b + (s.Bw == 1 ? 0 : i) * s.N : NULL;
        for (int64_t r = 0; r < s.M; r++)
            for (int64_t c = 0; c < s.N; c++) {
                double acc = bi ? bi[c] : 0, m = bi ? fabs(bi[c]) : 0;
                for (int64_t p = 0; p < s.K; p++) {
                    double t = x[(i * s.M + r) * s.K + p] * wi[p * s.N + c];
                    acc += t;
                    m += fabs(t);
                }
                y[(i * s.M + r) * s.N + c] = acc;
                mag[(i * s.M + r) * s.N + c] = m;
            }
    }
}

static void ref_bwd_x(shape s, const double *dy, const double *w, double *dx, double *mag)
{
    for (int64_t i = 0; i < s.B; i++) {
        const double *wi = w + (s.Bw == 1 ? 0 : i) * s.K * s.N;
        for (int64_t r = 0; r < s.M; r++)
            for (int64_t q = 0; q < s.K; q++) {
                double acc = dx[(i * s.M + r) * s.K + q], m = fabs(acc);
                for (int64_t p = 0; p < s.N; p++) {
                    double t = dy[(i * s.M + r) * s.N + p] * wi[q * s.N + p];
                    acc += t;
                    m += fabs(t);
                }
                dx[(i * s.M + r) * s.K + q] = acc;
                mag[(i * s.M + r) * s.K + q] = m;
            }
    }
}

static void ref_bwd_w(shape s, const double *x, const double *dy, double *dw, double *db,
                      double *mag, double *magb)
{
    for (int64_t j = 0; j < s.Bw * s.K * s.N; j++) mag[j] = fabs(dw[j]);
    for (int64_t j = 0; j < s.Bw * s.N; j++) magb[j] = fabs(db[j]);
    for (int64_t i = 0; i < s.B; i++) {
        const int64_t j = s.Bw == 1 ? 0 : i;
        for (int64_t r = 0; r < s.M; r++)
            for (int64_t c = 0; c < s.N; c++) {
                const double g = dy[(i * s.M + r) * s.N + c];
                db[j * s.N + c] += g;
                magb[j * s.N + c] += fabs(g);
                for (int64_t q = 0; q < s.K; q++) {
                    double t = x[(i * s.M + r) * s.K + q] * g;
                    dw[(j * s.K + q) * s.N + c] += t;
                    mag[(j * s.K + q) * s.N + c] += fabs(t);
                }
            }
    }
}

/* |got - want| <= tol * (reduction length + 2) * mag, elementwise */
static int close_all(const double *got, const double *want, const double *mag, int64_t n,
                     double eps, int64_t len, const char *what, shape s)
{
    double worst = 0;
    int64_t at = -1;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]), tol = 2 * eps * (double)(len + 2) * mag[i] + 1e-300;
        if (!(err <= tol) && (at < 0 || err / tol > worst)) {
            worst = err / tol;
            at = i;
        }
    }
    if (at >= 0)
        printf("  %s B=%lld Bw=%lld M=%lld K=%lld N=%lld: element %lld = %.9g, want %.9g (%.3g x tol)\n",
               what, (long long)s.B, (long long)s.Bw, (long long)s.M, (long long)s.K, (long long)s.N,
               (long long)at, got[at], want[at], worst);
    return at < 0;
}

/* One typed run of the three kernels on shape s; results (as double) in out_*. */
#define DEFINE_RUN(T, SFX)                                                                         \
    static int run_##SFX(shape s, int bias, const double *x, const double *w, const double *b,     \
                         const double *dy, const double *dx0, const double *dw0,                   \
                         const double *db0, double *y, double *dx, double *dw, double *db)         \
    {                                                                                              \
        const int64_t nx = s.B * s.M * s.K, nw = s.Bw * s.K * s.N, ny = s.B * s.M * s.N,           \
                      nb = s.Bw * s.N;                                                             \
        T *tx = malloc(sizeof(T) * (nx + 1)), *tw = malloc(sizeof(T) * (nw + 1));                  \
        T *tb = malloc(sizeof(T) * (nb + 1)), *tdy = malloc(sizeof(T) * (ny + 1));                 \
        T *ty = malloc(sizeof(T) * (ny + 1)), *tdx = malloc(sizeof(T) * (nx + 1));                 \
        T *tdw = malloc(sizeof(T) * (nw + 1)), *tdb = malloc(sizeof(T) * (nb + 1));                \
        for (int64_t i = 0; i < nx; i++) tx[i] = (T)x[i], tdx[i] = (T)dx0[i];                      \
        for (int64_t i = 0; i < nw; i++) tw[i] = (T)w[i], tdw[i] = (T)dw0[i];                      \
        for (int64_t i = 0; i < nb; i++) tb[i] = (T)b[i], tdb[i] = (T)db0[i];                      \
        for (int64_t i = 0; i < ny; i++) tdy[i] = (T)dy[i], ty[i] = (T)12345;                      \
        int rc = fd_matmul_fwd_##SFX(s.B, s.Bw, s.M, s.K, s.N, ty, tx, tw, bias ? tb : NULL);      \
        rc |= fd_matmul_bwd_x_##SFX(s.B, s.Bw, s.M, s.K, s.N, tdx, tdy, tw);                       \
        rc |= fd_matmul_bwd_w_##SFX(s.B, s.Bw, s.M, s.K, s.N, tdw, bias ? tdb : NULL, tx, tdy);    \
        for (int64_t i = 0; i < ny; i++) y[i] = ty[i];                                             \
        for (int64_t i = 0; i < nx; i++) dx[i] = tdx[i];                                           \
        for (int64_t i = 0; i < nw; i++) dw[i] = tdw[i];                                           \
        for (int64_t i = 0; i < nb; i++) db[i] = tdb[i];                                           \
        free(tx); free(tw); free(tb); free(tdy); free(ty); free(tdx); free(tdw); free(tdb);        \
        return rc;                                                                                 \
    }
DEFINE_RUN(float, f32)
DEFINE_RUN(double, f64)

static void round_to(double *a, int64_t n, int f32)
{
    if (f32)
        for (int64_t i = 0; i < n; i++) a[i] = (float)a[i];
}

/* Parity of fwd / bwd_x / bwd_w with the float64 loops, then bit-identity for 2 vs 1 threads. */
static void check_shape(shape s, int bias, int f32)
{
    const int64_t nx = s.B * s.M * s.K, nw = s.Bw * s.K * s.N, ny = s.B * s.M * s.N, nb = s.Bw * s.N;
    double *x = malloc(8 * (nx + 1)), *w = malloc(8 * (nw + 1)), *b = malloc(8 * (nb + 1));
    double *dy = malloc(8 * (ny + 1)), *dx0 = malloc(8 * (nx + 1)), *dw0 = malloc(8 * (nw + 1));
    double *db0 = malloc(8 * (nb + 1));
    double *y = malloc(8 * (ny + 1)), *dx = malloc(8 * (nx + 1)), *dw = malloc(8 * (nw + 1));
    double *db = malloc(8 * (nb + 1));
    double *ry = malloc(8 * (ny + 1)), *rdx = malloc(8 * (nx + 1)), *rdw = malloc(8 * (nw + 1));
    double *rdb = malloc(8 * (nb + 1)), *my = malloc(8 * (ny + 1)), *mdx = malloc(8 * (nx + 1));
    double *mdw = malloc(8 * (nw + 1)), *mdb = malloc(8 * (nb + 1));
    for (int64_t i = 0; i < nx; i++) x[i] = urand(), dx0[i] = urand();
    for (int64_t i = 0; i < nw; i++) w[i] = urand(), dw0[i] = urand();
    for (int64_t i = 0; i < nb; i++) b[i] = urand(), db0[i] = urand();
    for (int64_t i = 0; i < ny; i++) dy[i] = urand();
    round_to(x, nx, f32); round_to(dx0, nx, f32); round_to(w, nw, f32); round_to(dw0, nw, f32);
    round_to(b, nb, f32); round_to(db0, nb, f32); round_to(dy, ny, f32);

    ref_fwd(s, x, w, bias ? b : NULL, ry, my);
    memcpy(rdx, dx0, 8 * nx);
    ref_bwd_x(s, dy, w, rdx, mdx);
    memcpy(rdw, dw0, 8 * nw);
    memcpy(rdb, db0, 8 * nb);
    ref_bwd_w(s, x, dy, rdw, rdb, mdw, mdb);

    int rc = f32 ? run_f32(s, bias, x, w, b, dy, dx0, dw0, db0, y, dx, dw, db)
                 : run_f64(s, bias, x, w, b, dy, dx0, dw0, db0, y, dx, dw, db);
    CHECK(rc == FD_OK);
    const double eps = f32 ? 5.96e-8 : 1.11e-16;
    CHECK(close_all(y, ry, my, ny, eps, s.K, "fwd", s));
    CHECK(close_all(dx, rdx, mdx, nx, eps, s.N, "bwd_x", s));
    CHECK(close_all(dw, rdw, mdw, nw, eps, s.B * s.M, "bwd_w", s));
    if (bias)
        CHECK(close_all(db, rdb, mdb, nb, eps, s.B * s.M, "bwd_w db", s));
    else
        CHECK(memcmp(db, db0, 8 * nb) == 0); /* NULL db: untouched (it was never passed) */

    /* same bits with another thread count, and again */
    const int def = fd_get_num_threads();
    for (int t = 1; t <= 2; t++) {
        fd_set_num_threads(t == 1 ? (def > 1 ? 1 : 2) : def);
        double *y2 = malloc(8 * (ny + 1)), *dx2 = malloc(8 * (nx + 1)), *dw2 = malloc(8 * (nw + 1));
        double *db2 = malloc(8 * (nb + 1));
        rc = f32 ? run_f32(s, bias, x, w, b, dy, dx0, dw0, db0, y2, dx2, dw2, db2)
                 : run_f64(s, bias, x, w, b, dy, dx0, dw0, db0, y2, dx2, dw2, db2);
        int same = rc == FD_OK && memcmp(y, y2, 8 * ny) == 0 && memcmp(dx, dx2, 8 * nx) == 0 &&
                   memcmp(dw, dw2, 8 * nw) == 0 && memcmp(db, db2, 8 * nb) == 0;
        if (!same)
            printf("  not bit-identical (threads %d) B=%lld Bw=%lld M=%lld K=%lld N=%lld\n",
                   fd_get_num_threads(), (long long)s.B, (long long)s.Bw, (long long)s.M,
                   (long long)s.K, (long long)s.N);
        CHECK(same);
        free(y2); free(dx2); free(dw2); free(db2);
    }
    fd_set_num_threads(0);

    free(x); free(w); free(b); free(dy); free(dx0); free(dw0); free(db0); free(y); free(dx);
    free(dw); free(db); free(ry); free(rdx); free(rdw); free(rdb); free(my); free(mdx); free(mdw);
    free(mdb);
}

static void test_parity(void)
{
    /* edges of the micro-tile (MR 6; NR 4, 8, 16), of KC (256), MC (72, 96, 120, 144) */
    static const int64_t dims[] = {1, 5, 7, 16, 17, 33};
    const int ndims = sizeof dims / sizeof dims[0];
    for (int f32 = 0; f32 <= 1; f32++)
        for (int a = 0; a < ndims; a++)
            for (int c = 0; c < ndims; c++)
                for (int d = 0; d < ndims; d++) {
                    shape s = {3, 3, dims[a], dims[c], dims[d]};
                    check_shape(s, (a + c + d) % 2, f32);
                    shape s1 = {2, 1, dims[a], dims[c], dims[d]};
                    check_shape(s1, (a + c + d + 1) % 2, f32);
                }
    static const shape big[] = {
        {1, 1, 257, 257, 257},  /* everything one past a block (KC, 6, 16 / 8 / 4) */
        {1, 1, 145, 513, 33},   /* MC + 1 rows, two KC blocks + 1 */
        {1, 1, 300, 40, 300},   /* packed with k < KC */
        {2, 2, 150, 256, 200},  /* few big items: each GEMM threaded */
        {2, 1, 73, 255, 97},
        {5, 5, 97, 121, 33},
        {64, 64, 16, 16, 16},   /* batch-parallel, direct */
        {4096, 1, 1, 3, 2},     /* long flattened M */
        {64, 1, 40, 16, 16},    /* bwd_w k-split: reduction 2560 into a 16 x 16 output */
        {1, 1, 7, 3, 4097},     /* more than one NC panel */
        {1, 1, 12, 600, 600},   /* threaded, two row panels: units of strips, direct */
        {1, 1, 12, 3000, 512},  /* the same, packed */
        {1, 1, 64, 512, 1024},  /* threaded, units of row panels, direct */
        {3, 3, 0, 5, 4},        /* empty dims */
        {3, 3, 4, 0, 5},
        {3, 1, 4, 5, 0},
        {0, 0, 4, 5, 6},
        {0, 1, 4, 5, 6},
    };
    for (int f32 = 0; f32 <= 1; f32++)
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
            check_shape(big[i], 1, f32);
            check_shape(big[i], 0, f32);
        }
}

static void test_errors(void)
{
    float x[24], w[24], y[24], b[8];
    for (int i = 0; i < 24; i++) x[i] = w[i] = 1, y[i] = 7;
    for (int i = 0; i < 8; i++) b[i] = 1;
    CHECK(fd_matmul_fwd_f32(2, 3, 2, 2, 2, y, x, w, b) == FD_ERR_SHAPE);
    CHECK(fd_matmul_fwd_f32(-1, 1, 2, 2, 2, y, x, w, b) == FD_ERR_SIZE);
    CHECK(fd_matmul_fwd_f32(2, 1, 2, -2, 2, y, x, w, b) == FD_ERR_SIZE);
    CHECK(fd_matmul_fwd_f32(2, 1, 2, 2, 2, y, NULL, w, b) == FD_ERR_NULL);
    CHECK(fd_matmul_fwd_f32(2, 1, 2, 2, 2, NULL, x, w, b) == FD_ERR_NULL);
    CHECK(fd_matmul_bwd_x_f32(2, 2, 2, 2, 2, y, x, NULL) == FD_ERR_NULL);
    CHECK(fd_matmul_bwd_w_f32(2, 2, 2, 2, 2, y, NULL, NULL, x) == FD_ERR_NULL);
    CHECK(fd_matmul_bwd_w_f64(2, 0, 2, 2, 2, NULL, NULL, NULL, NULL) == FD_ERR_SHAPE);
    int untouched = 1;
    for (int i = 0; i < 24; i++) untouched &= y[i] == 7;
    CHECK(untouched);
    /* K == 0: y = b (or 0); bwd_x adds nothing; db still gets the column sums */
    CHECK(fd_matmul_fwd_f32(2, 1, 3, 0, 4, y, NULL, NULL, b) == FD_OK);
    CHECK(y[0] == 1 && y[23] == 1);
    CHECK(fd_matmul_fwd_f32(2, 1, 3, 0, 4, y, NULL, NULL, NULL) == FD_OK);
    CHECK(y[0] == 0 && y[23] == 0);
    for (int i = 0; i < 24; i++) y[i] = 1;
    for (int i = 0; i < 8; i++) b[i] = 0;
    CHECK(fd_matmul_bwd_w_f32(2, 2, 3, 0, 4, NULL, b, NULL, y) == FD_OK);
    CHECK(b[0] == 3 && b[7] == 3);
}

int main(void)
{
    /* the AVX2+FMA path with the AVX-512 GEMM where this CPU has it, then without, then generic */
    const int paths[3] = {FD_PATH_AVX2_FMA, FD_PATH_AVX2_FMA, FD_PATH_GENERIC};
    const int avx512[3] = {1, 0, 0};
    fd_gemm_backoff(0); /* every GEMM gets the threads its size allows, busy machine or not */
    CHECK(fd_gemm_avx512(5) == FD_ERR_ARG);
    for (int i = 0; i < 3; i++) {
        if (fd_set_simd_path(paths[i]) != FD_OK) {
            printf("(path %d not available here: skipped)\n", paths[i]);
            continue;
        }
        if (fd_gemm_avx512(avx512[i]) < 0) {
            printf("(AVX-512 GEMM not available here: skipped)\n");
            continue;
        }
        printf("path %d, AVX-512 GEMM %d, %d threads\n", fd_get_simd_path(), fd_gemm_avx512(-1),
               fd_get_num_threads());
        test_parity();
        test_errors();
    }
    fd_set_simd_path(-1);
    fd_gemm_avx512(1);
    fd_gemm_backoff(1);
    return check_summary();
}

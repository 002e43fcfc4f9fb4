/* fd_philox.h -- Philox4x32-10 (Salmon et al. 2011, Random123's reference rounds) and the per-tensor
 * key of the stateless random streams (gradient noise, fd_noise.c; stochastic rounding, fd_mixed.c).
 * Internal: not part of the public ABI.
 *
 *   K = philox({idx_lo, idx_hi, 0, 0}, {seed_lo, seed_hi})[0..1]      the key of tensor idx
 *   philox(counter[4], K)                                               a block of 4 random words
 */
#ifndef FD_PHILOX_H
#define FD_PHILOX_H

#include <stdint.h>

#define FD_PHILOX_M0 UINT64_C(0xD2511F53)
#define FD_PHILOX_M1 UINT64_C(0xCD9E8D57)
#define FD_PHILOX_W0 UINT32_C(0x9E3779B9)
#define FD_PHILOX_W1 UINT32_C(0xBB67AE85)

/* Philox4x32-10 of counter c under key (k0, k1), in place (out = c). */
static inline void fd_philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = FD_PHILOX_M0 * (uint64_t)c[0];
        uint64_t p1 = FD_PHILOX_M1 * (uint64_t)c[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += FD_PHILOX_W0;
        k1 += FD_PHILOX_W1;
    }
}

/* The key K of the tensor at position `index` of the optimizer's list under `seed`. */
static inline void fd_philox_tensor_key(uint64_t seed, uint64_t index, uint32_t key[2])
{
    uint32_t c[4] = {(uint32_t)index, (uint32_t)(index >> 32), 0, 0};
    fd_philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    key[0] = c[0];
    key[1] = c[1];
}

#endif /* FD_PHILOX_H */

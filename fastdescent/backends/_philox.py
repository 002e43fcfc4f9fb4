"""Philox4x32-10 (Random123's rounds) written once for both Numba backends.

:func:`philox` is plain Python over ``np.uint64`` scalars holding 32-bit words (no overflow, also in
Numba's CUDA simulator); ``numba_cpu/noise.py`` compiles it with ``@njit`` and
``numba_cuda/noise.py`` as an inlined ``@cuda.jit`` device function, so the two cannot drift apart.
The NumPy backend's vectorised version (``numpy_ref/noise.py``) is the readable reference, and
``csrc/fd_noise.c`` the C one; Random123's known-answer vectors check them all
(``tests/test_noise.py``).
"""

import numpy as np

MASK = np.uint64(0xFFFFFFFF)
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
S32, S11 = np.uint64(32), np.uint64(11)
ONE, ZERO = np.uint64(1), np.uint64(0)
TWO_M53 = 2.0 ** -53
TWO_PI = 6.283185307179586


def philox(c0, c1, c2, c3, k0, k1):
    """The four output words of counter (c0, c1, c2, c3) under key (k0, k1)."""
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        n0 = (p1 >> S32) ^ c1 ^ k0
        n2 = (p0 >> S32) ^ c3 ^ k1
        c1 = p1 & MASK
        c3 = p0 & MASK
        c0 = n0
        c2 = n2
        k0 = (k0 + W0) & MASK
        k1 = (k1 + W1) & MASK
    return c0, c1, c2, c3

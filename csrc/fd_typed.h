/* fd_typed.h -- instantiate a kernel file's typed part once per element type.
 *
 * A kernel file writes its typed code (using FD_T, FD_S(name), FD_SQRT, FD_FABS, FD_COPYSIGN, FD_ONE) under
 * `#ifdef FD_T`, and in its untyped part does
 *     #define FD_TYPED_FILE "fd_adam.c"
 *     #include "fd_typed.h"
 * which includes FD_TYPED_FILE again with FD_T = float (suffix f32, FD_IS_F32 1) and FD_T = double
 * (suffix f64, FD_IS_F32 0).
 */
#ifndef FD_TYPED_FILE
#error "define FD_TYPED_FILE before including fd_typed.h"
#endif

#include <math.h>

#define FD_T float
#define FD_SFX f32
#define FD_SQRT sqrtf
#define FD_FABS fabsf
#define FD_COPYSIGN copysignf
#define FD_ONE 1.0f
#define FD_IS_F32 1
#define fd_signmask_f32 uint32_t
#define FD_SIGNBIT_f32 UINT32_C(0x80000000)
#include FD_TYPED_FILE
#undef FD_IS_F32
#undef FD_T
#undef FD_SFX
#undef FD_SQRT
#undef FD_FABS
#undef FD_COPYSIGN
#undef FD_ONE

#define FD_T double
#define FD_SFX f64
#define FD_SQRT sqrt
#define FD_FABS fabs
#define FD_COPYSIGN copysign
#define FD_ONE 1.0
#define FD_IS_F32 0
#define fd_signmask_f64 uint64_t
#define FD_SIGNBIT_f64 UINT64_C(0x8000000000000000)
#include FD_TYPED_FILE
#undef FD_IS_F32
#undef FD_T
#undef FD_SFX
#undef FD_SQRT
#undef FD_FABS
#undef FD_COPYSIGN
#undef FD_ONE

#undef FD_TYPED_FILE

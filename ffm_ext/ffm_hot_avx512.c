/* Hot loops for x86-64 with AVX-512 (F, DQ, VL; built with -mavx512f -mavx512dq -mavx512vl
 * -mavx2 -mfma; used only when the CPU has them). */
#define FFM_ISA avx512
#include "ffm_hot_impl.h"

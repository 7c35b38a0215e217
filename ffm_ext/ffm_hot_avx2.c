/* Hot loops for x86-64 with AVX2 and FMA (built with -mavx2 -mfma; used only when the CPU has
 * both). */
#define FFM_ISA avx2
#include "ffm_hot_impl.h"

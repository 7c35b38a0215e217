/* Hot loops for x86-64 with AVX2 and FMA (built with -mavx2 -mfma), moving 128-bit lanes with
 * loads and stores instead of vperm2f128 (FFM_LANE_LOADS): for CPUs that run that shuffle as
 * eight micro-ops (AMD Zen 1); used only when the CPU has AVX2 and FMA. */
#define FFM_LANE_LOADS 1
#define FFM_ISA avx2_lanes
#include "ffm_hot_impl.h"

/* Hot loops for any CPU (SSE2 on x86-64, NEON through vector extensions on arm64). */
#define FFM_ISA generic
#include "ffm_hot_impl.h"

"""How much of two cores this machine gives right now: a gauge for 2-thread figures.

    python -m benchmarks.two_core_gauge [--rounds 5]

A compute loop of 256-bit fused multiply-adds (the instructions of ctrflow's AVX2 hot loops,
in registers: no memory traffic, nothing shared) runs alone, then twice at once as two
processes. Capacity = t(alone)/t(first of the pair) + t(alone)/t(second): 2.0 when both vCPUs
run it at full speed. On this VM it moves between about x1.8 and x2.0 from one minute to the
next, with no steal time counted: the two vCPUs slow each other's vector work down (a scalar
loop is hit less). No 2-thread program of such instructions scales beyond it, so ffm_bench
prints it beside ctrflow's 2-thread scaling, measured in the same rounds.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import subprocess
import tempfile

LOOP_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    const long n = argc > 1 ? atol(argv[1]) : 100000000L;
    /* Ten independent chains of 8-float FMAs: enough to keep the FMA units busy. */
    __m256 a[10];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 10; ++i) a[i] = _mm256_set1_ps((float)i);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long it = 0; it < n; ++it)
        for (int i = 0; i < 10; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    float sum = 0;
    for (int i = 0; i < 10; ++i) sum += a[i][0];
    printf("%.6f %g\n", (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec), sum);
    return 0;
}
"""
ITERATIONS = "100000000"  # about 0.4 s alone


class GaugeUnavailableError(RuntimeError):
    """No C compiler or no AVX2 here: the gauge cannot run."""


class TwoCoreGauge:
    """The compute loop, compiled once with the system C compiler into `directory`."""

    def __init__(self, directory: pathlib.Path) -> None:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None or " avx2 " not in pathlib.Path("/proc/cpuinfo").read_text():
            raise GaugeUnavailableError("the two-core gauge needs a C compiler and an AVX2 CPU")
        directory.mkdir(parents=True, exist_ok=True)
        source, self.binary = directory / "loop.c", directory / "loop"
        source.write_text(LOOP_C)
        flags = ["-O2", "-mavx2", "-mfma"]
        subprocess.run([compiler, *flags, "-o", str(self.binary), str(source)], check=True)

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen([str(self.binary), ITERATIONS], stdout=subprocess.PIPE, text=True)

    @staticmethod
    def _seconds(proc: subprocess.Popen[str]) -> float:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the gauge's loop failed ({proc.returncode})")
        return float(out.split()[0])

    def capacity(self) -> float:
        """Cores' worth of this loop's speed the machine gives to two processes at once. The
        loop alone runs before and after the pair and the faster is kept: an interrupted run
        alone would inflate the figure."""
        before = self._seconds(self._start())
        pair = [self._start(), self._start()]
        both = [self._seconds(proc) for proc in pair]
        alone = min(before, self._seconds(self._start()))
        return sum(alone / seconds for seconds in both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gauge = TwoCoreGauge(pathlib.Path(tmp))
        values = [gauge.capacity() for _ in range(args.rounds)]
    print(
        f"two-core capacity: median x{statistics.median(values):.2f}"
        f" (rounds: {', '.join(f'x{v:.2f}' for v in values)})"
    )


if __name__ == "__main__":
    main()

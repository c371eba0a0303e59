"""The cpu peer of `kitten search matmul --device cpu`: numpy's matmul (OpenBLAS in the
pip wheel) of float32 M x K times K x N, the median of 30 runs after 5 warm-ups, checked
against a float64 product. numpy is not a dependency of kitten: install it in a venv for
this benchmark only (python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy).
  /tmp/np/bin/python tools/cpu/matmul_peer.py M,N,K ..."""
import sys
import time

import numpy as np


def main():
    for shape in sys.argv[1:] or ["512,512,512"]:
        m, n, k = (int(x) for x in shape.split(","))
        a = np.random.rand(m, k).astype(np.float32)
        b = np.random.rand(k, n).astype(np.float32)
        c = a @ b
        err = np.abs(c - a.astype(np.float64) @ b.astype(np.float64)).max() / k
        for _ in range(5):
            a @ b
        times = []
        for _ in range(30):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        ms = sorted(times)[len(times) // 2] * 1e3
        print(f"numpy {np.__version__} matmul f32 {m}x{n}x{k}: {ms:.3f} ms, "
              f"{2 * m * n * k / (ms * 1e6):.1f} GFLOP/s (max error / K {err:.1e})")


main()

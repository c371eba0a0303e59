"""The peer for `kitten bench gemm` on the GPU: torch.matmul (cuBLAS) at the same shapes
in the same run, bf16 in and out, medians of 20 runs after 5 warm-ups by CUDA
events; each output checked against a float64 reference on 256 sampled elements.
  python3 tools/gpu/gemm_peer.py M,N,K [M,N,K ...]"""
import sys

import torch

from torch_peer import timed_ms  # the same timing as the rest of the GPU script


def main():
    print("device:", torch.cuda.get_device_name())
    for shape in sys.argv[1:]:
        m, n, k = (int(x) for x in shape.split(","))
        a = torch.randn(m, k, device="cuda").bfloat16()
        b = torch.randn(k, n, device="cuda").bfloat16()
        c = torch.matmul(a, b)
        i = torch.randint(0, m, (256,), device="cuda")
        j = torch.randint(0, n, (256,), device="cuda")
        want = (a[i].double() * b[:, j].T.double()).sum(1)
        scale = (a[i].double() * b[:, j].T.double()).abs().sum(1)
        err = ((c[i, j].double() - want).abs() / scale).max().item()
        ms = timed_ms(lambda: torch.matmul(a, b))
        print(f"torch.matmul bf16 {m}x{n}x{k}: {ms:.4f} ms, {2 * m * n * k / (ms * 1e9):.1f} TFLOP/s, "
              f"max sampled error {err:.2e} of the row*column scale")


main()

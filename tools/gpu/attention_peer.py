"""The peers of `kitten bench flash_attention_fwd` on the GPU: torch SDPA's flash backend
(FlashAttention-2) and its cuDNN backend at the same shapes in the same run, bf16,
medians of 20 runs after 5 warm-ups by CUDA events; each output checked on 32 sampled
rows against a float64 reference.
  python3 tools/gpu/attention_peer.py B,H,N,D[,causal] ..."""
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention as sdpa

from torch_peer import timed_ms  # the same timing as the rest of the GPU script


def check(q, k, v, o, causal):
    b, h, n, d = q.shape
    worst = 0.0
    for _ in range(32):
        bi, hi, i = (int(torch.randint(0, x, ())) for x in (b, h, n))
        s = (k[bi, hi].double() @ q[bi, hi, i].double()) / d**0.5
        if causal:
            s[i + 1:] = -float("inf")
        p = torch.softmax(s, 0)
        want = p @ v[bi, hi].double()
        scale = p @ v[bi, hi].double().abs()
        worst = max(worst, ((o[bi, hi, i].double() - want).abs() / scale).max().item())
    return worst


def main():
    print("device:", torch.cuda.get_device_name())
    for spec in sys.argv[1:]:
        parts = spec.split(",")
        b, h, n, d = (int(x) for x in parts[:4])
        causal = len(parts) > 4 and parts[4] == "causal"
        q, k, v = (torch.randn(b, h, n, d, device="cuda").bfloat16() for _ in range(3))
        flops = 4 * b * h * n * n * d / (2 if causal else 1)
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            with sdpa_kernel(backend):
                o = sdpa(q, k, v, is_causal=causal)
                err = check(q, k, v, o, causal)
                ms = timed_ms(lambda: sdpa(q, k, v, is_causal=causal))
            print(f"torch sdpa {name} B,H,N,D = {b},{h},{n},{d}{' causal' if causal else ''}: "
                  f"{ms:.4f} ms, {flops / (ms * 1e9):.1f} TFLOP/s, "
                  f"max sampled error {err:.2e} of the sum p|v|")


main()

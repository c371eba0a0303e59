"""The peers for tools/gpu/search_figures.sh, in the same run: torch.matmul (cuBLAS) bf16
at the GEMM shapes (medians of 20 runs by CUDA events, as gemm_peer.py), and torch's row
sum, row softmax and layer norm of float32 ROWSxCOLS and bf16 GEMV (1xK times KxN), timed
as `kitten search` times its candidates: a read of 256 MiB before each run flushes the L2
(a read, not a copy, so the L2 is left clean: no write-back of the flush's own lines is
charged to the run). Each output checked.
  python3 tools/gpu/search_peer.py --gemm M,N,K ... --rows R,C ... --gemv K,N ...
  --cat ROWS,W1,W2,... (torch.cat along dim 1, eager and torch.compile'd)
  (--rows-compiled R,C ...: the rows with torch.compile's kernels beside torch's)"""
import sys

import torch

from torch_peer import timed_ms


def flushed_ms(fn, reps=10):
    a = torch.zeros(64 << 20, device="cuda")

    def flush():
        a.sum()
        # Then keep the GPU busy (~0.1 ms) while the host queues the run: Python's launch
        # overhead (torch.compile's guards, its compile threads) must not be timed.
        torch.cuda._sleep(200_000)

    return timed_ms(fn, warm=1, reps=reps, before=flush)


def main():
    print("device:", torch.cuda.get_device_name())
    mode = None
    for arg in sys.argv[1:]:
        if arg.startswith("--"):
            mode = arg
            continue
        dims = [int(x) for x in arg.split(",")]
        if mode == "--gemv":
            k, n = dims
            a = torch.randn(1, k, device="cuda").bfloat16()
            b = torch.randn(k, n, device="cuda").bfloat16()
            err = (torch.matmul(a, b).double() - a.double() @ b.double()).abs().max().item()
            ms = flushed_ms(lambda: torch.matmul(a, b))
            print(f"peer torch.matmul bf16 1x{n}x{k} (L2 flushed): {ms:.4f} ms "
                  f"{2 * k * n / (ms * 1e6):.0f} GB/s of B (max error {err:.2e})")
        elif mode == "--cat":
            # torch.cat of float32 ROWS x Wi along dim 1, eager and torch.compile's kernel.
            rows, widths = dims[0], dims[1:]
            xs = [torch.randn(rows, w, device="cuda") for w in widths]
            moved = 2 * rows * sum(widths) * 4
            cat = lambda *t: torch.cat(t, dim=1)
            for label, f in (("torch.cat", cat), ("torch.compile(torch.cat)", torch.compile(cat))):
                assert torch.equal(f(*xs), cat(*xs)), label
                ms = flushed_ms(lambda: f(*xs))
                print(f"peer {label} {rows}x{'+'.join(map(str, widths))}: {ms:.4f} ms "
                      f"{moved / (ms * 1e6):.0f} GB/s")
        elif mode == "--gemm":
            m, n, k = dims
            a = torch.randn(m, k, device="cuda").bfloat16()
            b = torch.randn(k, n, device="cuda").bfloat16()
            c = torch.matmul(a, b)
            err = (c.double() - a.double() @ b.double()).abs().max().item()
            ms = timed_ms(lambda: torch.matmul(a, b))
            print(f"peer torch.matmul bf16 {m}x{n}x{k}: {ms:.4f} ms "
                  f"{2 * m * n * k / (ms * 1e9):.1f} TFLOP/s (max error {err:.2e})")
        else:
            r, c = dims
            x = torch.randn(r, c, device="cuda")
            w, bias = torch.randn(c, device="cuda"), torch.randn(c, device="cuda")
            ln = lambda t: torch.nn.functional.layer_norm(t, (c,), w.to(t.dtype), bias.to(t.dtype))
            for name, fn, atol in (("torch.sum", lambda t: torch.sum(t, dim=1), 1e-3),
                                   ("torch.softmax", lambda t: torch.softmax(t, dim=1), 1e-6),
                                   ("torch.layer_norm", ln, 1e-4)):
                want = fn(x.double())
                moved = x.numel() * 4 * (1 if name == "torch.sum" else 2)
                peers = [(name, fn)]
                if mode == "--rows-compiled":  # also torch.compile's kernel (Triton)
                    peers.append((f"torch.compile({name})", torch.compile(fn)))
                for label, f in peers:
                    assert torch.allclose(f(x).double(), want, rtol=1e-4, atol=atol), label
                    ms = flushed_ms(lambda: f(x))
                    print(f"peer {label} rows {r}x{c}: {ms:.4f} ms {moved / (ms * 1e6):.0f} GB/s")


main()

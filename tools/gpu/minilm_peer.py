"""The peer of `kitten bench minilm` on the GPU: all-MiniLM-L6-v2 in torch eager, float16
weights and activations, a batch of B random sentences of T tokens; prints sentences/s.

  python3 tools/gpu/minilm_peer.py WEIGHTS.safetensors [--batch 64] [--tokens 128] [--reps 20]

The batched float16 forward is checked against minilm_reference.py's float32 forward of
each of the first sentences (cosine >= 0.999) before it is timed.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import minilm_reference as ref  # noqa: E402


def forward(ids, w, heads=12, eps=1e-12):
    b, t = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t] +
         w["embeddings.token_type_embeddings.weight"][0])
    ln = torch.nn.functional.layer_norm
    x = ln(x, (x.shape[-1],), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    layers = sum(1 for k in w if k.endswith(".attention.self.query.weight"))
    lin = torch.nn.functional.linear
    for i in range(layers):
        p = f"encoder.layer.{i}."
        h = x.shape[-1]
        q, k, v = (lin(x, w[p + "attention.self." + m + ".weight"], w[p + "attention.self." + m + ".bias"])
                   .reshape(b, t, heads, h // heads).transpose(1, 2) for m in ("query", "key", "value"))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h // heads), dim=-1) @ v
        a = a.transpose(1, 2).reshape(b, t, h)
        x = ln(x + lin(a, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"]), (h,),
               w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        f = torch.nn.functional.gelu(lin(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
        x = ln(x + lin(f, w[p + "output.dense.weight"], w[p + "output.dense.bias"]), (h,),
               w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    pooled = x.float().mean(1)
    return pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    w32 = ref.load_safetensors(args.weights, "cuda")
    w16 = {k: (v.half() if v.is_floating_point() else v) for k, v in w32.items()}
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 29000, (args.batch, args.tokens), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    ids = ids.cuda()
    with torch.no_grad():
        out = forward(ids, w16)
        for i in range(min(4, args.batch)):
            want = ref.embed(ids[i], w32)
            cos = float(torch.dot(out[i], want) / (out[i].norm() * want.norm()))
            assert cos >= 0.999, f"sentence {i}: cosine {cos}"
        times = []
        for _ in range(args.reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            forward(ids, w16)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]
    print(f"torch eager float16 {torch.cuda.get_device_name()}: batch {args.batch} x {args.tokens}: "
          f"{t * 1e3:.2f} ms per forward, {args.batch / t:.1f} sentences/s (checked against float32)")


if __name__ == "__main__":
    main()

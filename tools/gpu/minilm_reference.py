"""Reference sentence embeddings of all-MiniLM-L6-v2 in plain torch, for kitten's BERT encoder.

  python3 tools/gpu/minilm_reference.py WEIGHTS.safetensors OUT.txt
      [--ids tests/frontend/data/minilm_token_ids.txt] [--device cuda|cpu]

Reads the weights (F32, F16 or BF16; e.g. the float16 file of tools/minilm/to_float16.py)
with plain struct + json and computes in float32 (TF32 off) on the device (cuda when there
is one): the BERT encoder (6 layers, hidden 384, 12 heads of 32, GELU erf, LayerNorm eps
1e-12), then the mean over the tokens and L2 normalisation, as sentence-transformers does.
Each line of --ids is one sentence's token ids ([CLS] ... [SEP]); each line of OUT its 384
floats ("%.9g"). Imports neither transformers nor sentence-transformers.
"""
import argparse
import json
import math
import os
import struct

import torch

HEADS = 12
EPS = 1e-12
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64}


def load_safetensors(path, device):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        x = torch.frombuffer(data, dtype=DTYPES[t["dtype"]], count=(end - begin) //
                             DTYPES[t["dtype"]].itemsize, offset=begin).reshape(t["shape"])
        out[name] = (x.float() if x.is_floating_point() else x.clone()).to(device)
    return out


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * w + b


def linear(x, w, prefix):
    return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def encode(ids, w):
    """Token ids of one sentence -> its hidden states, (tokens, 384)."""
    seq = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] +
         w["embeddings.position_embeddings.weight"][:seq] +
         w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    layers = sum(1 for k in w if k.endswith(".attention.self.query.weight"))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        hidden = x.shape[-1]
        d = hidden // HEADS
        q, k, v = (linear(x, w, p + "attention.self." + m).reshape(seq, HEADS, d).transpose(0, 1)
                   for m in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1)
        ctx = (probs @ v).transpose(0, 1).reshape(seq, hidden)
        x = layer_norm(x + linear(ctx, w, p + "attention.output.dense"),
                       w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"])
        h = linear(x, w, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        x = layer_norm(x + linear(h, w, p + "output.dense"), w[p + "output.LayerNorm.weight"],
                       w[p + "output.LayerNorm.bias"])
    return x


def embed(ids, w):
    pooled = encode(ids, w).mean(0)  # every token is attended: the mask is all ones
    return pooled / pooled.norm().clamp_min(1e-12)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--ids", default=os.path.join(here, "../../tests/frontend/data/"
                                                  "minilm_token_ids.txt"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    w = load_safetensors(args.weights, args.device)
    with open(args.ids) as f:
        sentences = [[int(t) for t in line.split()] for line in f if line.strip()]
    with torch.no_grad(), open(args.out, "w") as f:
        for ids in sentences:
            e = embed(torch.tensor(ids, device=args.device), w).cpu()
            f.write(" ".join("%.9g" % v for v in e.tolist()) + "\n")
    print(f"{args.out}: {len(sentences)} embeddings on {args.device} "
          f"({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'})")


if __name__ == "__main__":
    main()

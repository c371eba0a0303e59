#!/usr/bin/env python3
"""The peer of `kitten bench train-step`: the train demo's model (a 2-layer causal
transformer, width 64, 4 heads, pre-layernorm, tanh gelu; 65 random tokens over a
vocabulary of 32; AdamW lr 3e-3, weight decay 1e-2) trained in torch, eager and with the
whole step captured in a CUDA graph. Each step reads the loss on the host, as kitten's
does. Prints the time per step (after 10 warm steps) and the final loss of each, which
must fall below 0.05 (the check that the measured steps train).

    python3 tools/gpu/train_peer.py [--steps N]
"""
import argparse
import time

import torch
import torch.nn.functional as F

V, W, H, L, T = 32, 64, 4, 2, 64


def make_model(dev, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def normal(*s):
        return (torch.randn(*s, generator=g) * 0.02).to(dev).requires_grad_()

    def full(n, v):
        return torch.full((n,), float(v), device=dev).requires_grad_()

    p = {"tok": normal(V, W), "pos": normal(T, W)}
    for i in range(L):
        p.update({f"{i}.ln1w": full(W, 1), f"{i}.ln1b": full(W, 0),
                  f"{i}.qkvw": normal(W, 3 * W), f"{i}.qkvb": full(3 * W, 0),
                  f"{i}.projw": normal(W, W), f"{i}.projb": full(W, 0),
                  f"{i}.ln2w": full(W, 1), f"{i}.ln2b": full(W, 0),
                  f"{i}.fcw": normal(W, 4 * W), f"{i}.fcb": full(4 * W, 0),
                  f"{i}.outw": normal(4 * W, W), f"{i}.outb": full(W, 0)})
    p.update({"lnfw": full(W, 1), "lnfb": full(W, 0), "head": normal(W, V)})
    return p


def loss_of(p, tokens, targets):
    x = p["tok"][tokens] + p["pos"][:T]
    for i in range(L):
        h = F.layer_norm(x, (W,), p[f"{i}.ln1w"], p[f"{i}.ln1b"])
        qkv = h @ p[f"{i}.qkvw"] + p[f"{i}.qkvb"]
        q, k, v = (t.reshape(T, H, W // H).transpose(0, 1) for t in qkv.split(W, -1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + a.transpose(0, 1).reshape(T, W) @ p[f"{i}.projw"] + p[f"{i}.projb"]
        f = F.gelu(F.layer_norm(x, (W,), p[f"{i}.ln2w"], p[f"{i}.ln2b"]) @ p[f"{i}.fcw"]
                   + p[f"{i}.fcb"], approximate="tanh")
        x = x + f @ p[f"{i}.outw"] + p[f"{i}.outb"]
    logits = F.layer_norm(x, (W,), p["lnfw"], p["lnfb"]) @ p["head"]
    return F.cross_entropy(logits, targets)


def run(steps, graphed, dev="cuda"):
    g = torch.Generator(device="cpu").manual_seed(1)
    seq = torch.randint(0, V, (T + 1,), generator=g)
    tokens, targets = seq[:-1].to(dev), seq[1:].to(dev)
    p = make_model(dev, 1)
    opt = torch.optim.AdamW(list(p.values()), lr=3e-3, weight_decay=1e-2, capturable=graphed)
    if not graphed:
        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_of(p, tokens, targets)
            loss.backward()
            opt.step()
            return loss.item()
    else:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up steps off the capture (they train too)
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                loss_of(p, tokens, targets).backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = loss_of(p, tokens, targets)
            static_loss.backward()
            opt.step()

        def step():
            graph.replay()
            return static_loss.item()
    times, losses = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
    warm = times[10:]
    return sum(warm) / len(warm), losses[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    a = ap.parse_args()
    for graphed in (False, True):
        per, last = run(a.steps, graphed)
        ok = "ok" if last < 0.05 else "DID NOT TRAIN"
        print(f"torch {'CUDA graph' if graphed else 'eager'}: {per * 1e3:.3f} ms per step, "
              f"final loss {last:.4f} after {a.steps} steps ({ok})")


if __name__ == "__main__":
    main()

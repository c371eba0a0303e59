"""The peer's numbers for tools/gpu/check.sh, measured in the same run as kitten's:
device-to-device copy bandwidth, tiny-kernel launch cost (eager and CUDA-graph
replayed), torch.matmul at 4096^3 (float32 without TF32, and bfloat16), a row
softmax and one long sum. Medians of 20
runs after 5 warm-ups, by CUDA events. Writes JSON."""
import json
import statistics
import sys
import time

import torch


def timed_ms(fn, warm=5, reps=20, before=None):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        if before:  # untimed work before each run (an L2 flush)
            before()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def host_ms(fn, warm=5, reps=20):
    for _ in range(warm):
        fn()
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    r = {"device": torch.cuda.get_device_name()}
    n = 64 << 20
    a = torch.randn(n, device="cuda")
    b = torch.empty_like(a)
    ms = timed_ms(lambda: b.copy_(a))
    r["d2d_copy_256MB_GBps"] = 2 * n * 4 / (ms * 1e6)
    x = torch.randn(32, device="cuda")
    y = torch.randn(32, device="cuda")
    out = torch.empty_like(x)
    launches = 1000
    r["launch_eager_us"] = 1e3 * host_ms(lambda: [torch.add(x, y, out=out) for _ in range(launches)]) / launches
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.add(x, y, out=out)
        with torch.cuda.graph(g):
            for _ in range(launches):
                torch.add(x, y, out=out)
    torch.cuda.current_stream().wait_stream(s)
    r["launch_graph_us"] = 1e3 * host_ms(g.replay) / launches
    torch.backends.cuda.matmul.allow_tf32 = False
    m = 4096
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        p = torch.randn(m, m, device="cuda", dtype=dtype)
        q = torch.randn(m, m, device="cuda", dtype=dtype)
        ms = timed_ms(lambda: torch.matmul(p, q))
        r[f"matmul_{name}_TFLOPs"] = 2 * m ** 3 / (ms * 1e9)
    x = torch.randn(16384, 1024, device="cuda")
    ms = timed_ms(lambda: torch.softmax(x, dim=1))
    r["softmax_16384x1024_GBps"] = 2 * x.numel() * 4 / (ms * 1e6)
    v = torch.rand(64 << 20, device="cuda")
    ms = timed_ms(lambda: torch.sum(v))
    r["sum_256MB_GBps"] = v.numel() * 4 / (ms * 1e6)
    text = json.dumps(r, indent=2)
    print(text)
    if len(sys.argv) > 2 and sys.argv[1] == "--json":
        with open(sys.argv[2], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

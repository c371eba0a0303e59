"""Prints kitten's GPU figures beside the peer's, as ratios, from the two JSON files
that tools/gpu/check.sh writes; writes the combined table as JSON too."""
import json
import sys

k = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))
rows = [
    ("elementwise add 2x256MB (GB/s) vs torch d2d copy", k["add_256MB_GBps"], t["d2d_copy_256MB_GBps"], True),
    ("launch, direct (us/kernel) vs bare driver loop", k["launch_direct_us"], k["launch_bare_driver_us"], False),
    ("launch, graph replay (us/kernel) vs bare driver graph", k["launch_graph_us"], k["launch_bare_graph_us"], False),
    ("launch, graph replay + rebind (us/kernel) vs bare rebind", k["launch_graph_rebind_us"], k["launch_bare_graph_rebind_us"], False),
    ("launch, direct (us/kernel) vs torch eager", k["launch_direct_us"], t["launch_eager_us"], False),
    ("launch, graph replay (us/kernel) vs torch graph", k["launch_graph_us"], t["launch_graph_us"], False),
    ("1GiB copy + 2048^3 GEMM on two queues (ms) vs one after other", k["overlap_concurrent_ms"], k["overlap_sequential_ms"], False),
    ("GEMM f32 4096^3 tiled (TFLOP/s) vs torch.matmul f32", k["gemm_f32_tiled_TFLOPs"], t["matmul_f32_TFLOPs"], True),
    ("GEMM bf16 4096^3 mma.sync (TFLOP/s) vs torch.matmul bf16", k["gemm_bf16_mma_TFLOPs"], t["matmul_bf16_TFLOPs"], True),
    ("GEMM f32 4096^3 pipeline, heuristic (TFLOP/s) vs torch f32", k["gemm_f32_heuristic_TFLOPs"], t["matmul_f32_TFLOPs"], True),
    ("GEMM f32 4096^3 pipeline, 16x16 threads (TFLOP/s) vs torch", k["gemm_f32_local_TFLOPs"], t["matmul_f32_TFLOPs"], True),
    ("row softmax 16384x1024 f32 (GB/s) vs torch.softmax", k["softmax_16384x1024_GBps"], t["softmax_16384x1024_GBps"], True),
    ("sum of 64M f32 (GB/s) vs torch.sum", k["sum_256MB_GBps"], t["sum_256MB_GBps"], True),
]
out = []
print(f"device: {t.get('device', '?')}")
print(f"{'case':58} {'kitten':>10} {'peer':>10} {'kitten/peer':>12}")
for name, mine, peer, higher_better in rows:
    ratio = mine / peer if peer else float("nan")
    print(f"{name:58} {mine:10.3f} {peer:10.3f} {ratio:12.3f}" + ("" if higher_better else "  (lower is better)"))
    out.append({"case": name, "kitten": mine, "peer": peer, "ratio": ratio, "higher_is_better": higher_better})
if len(sys.argv) > 3:
    json.dump({"device": t.get("device"), "rows": out}, open(sys.argv[3], "w"), indent=2)

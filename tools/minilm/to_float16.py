#!/usr/bin/env python3
"""Converts a safetensors file to float16: F32 tensors become F16, the others are copied.

  to_float16.py IN.safetensors OUT.safetensors

Plain struct + json, with numpy when it is installed (else Python's struct, slower). Values
round to nearest even; one beyond the float16 range is an error. The header keeps the
tensors' order and __metadata__; OUT is written atomically.
"""
import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError:
    np = None


def to_f16(raw):
    if np is not None:
        x = np.frombuffer(raw, dtype="<f4")
        h = x.astype("<f2")
        if not np.array_equal(np.isinf(h), np.isinf(x)):
            raise OverflowError("a value is beyond the float16 range")
        return h.tobytes()
    n = len(raw) // 4
    return struct.pack(f"<{n}e", *struct.unpack(f"<{n}f", raw))


def convert(src, dst):
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    out_header, chunks, offset = {}, [], 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = t["data_offsets"]
        raw = data[begin:end]
        if t["dtype"] == "F32":
            try:
                raw = to_f16(raw)
            except OverflowError as e:
                sys.exit(f"{src}: tensor {name}: {e}")
            t = dict(t, dtype="F16")
        out_header[name] = dict(t, data_offsets=[offset, offset + len(raw)])
        chunks.append(raw)
        offset += len(raw)
    if meta is not None:
        out_header = {"__metadata__": meta, **out_header}
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for raw in chunks:
            f.write(raw)
    os.replace(tmp, dst)
    print(f"{dst}: {len(chunks)} tensors, {offset} bytes of data")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    convert(sys.argv[1], sys.argv[2])

"""The native float32 products against torch's ``linear`` (MKL/oneDNN), in one process.

Run it directly (needs the ``bench`` extra for torch)::

    python bench/bench_products.py [--threads N] [--seconds S] [--json OUT]

At a BERT-base layer's shapes (768 wide, 3072 in the feed-forward) for a batch of sentences
(2,900 rows), a batch of passages (5,110 rows) and one text (32 rows): GFLOP/s of
``linear(x, pack_linear(w))`` on the kernels' helper threads and of ``torch.nn.functional.
linear(x, w)`` on as many torch threads, each the best of three timed runs of ``--seconds``,
the two taking turns; the ratio > 1 means the native products are faster.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable

import numpy as np

from jupyter_mlx_embed.engine import native

SHAPES = (  # rows, depth, cols
    (2900, 768, 2304),
    (2900, 768, 3072),
    (2900, 3072, 768),
    (5110, 768, 3072),
    (5110, 3072, 768),
    (32, 768, 3072),
)


def rate(fn: Callable[[], object], flops: float, seconds: float) -> float:
    """GFLOP/s of ``fn`` over a run of about ``seconds``."""
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return flops * count / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads per side")
    parser.add_argument("--seconds", type=float, default=0.4, help="length of one timed run")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    import mlx.core as mx
    import torch

    kernels = native.load_kernels()
    if kernels is None:
        raise SystemExit(f"the native kernels are not available: {native.kernels_info().detail}")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows_out = []
    print("| rows x depth x cols | native GFLOP/s | torch GFLOP/s | native / torch |")
    print("|---|---:|---:|---:|")
    for rows, depth, cols in SHAPES:
        x = rng.standard_normal((rows, depth)).astype(np.float32)
        w = (rng.standard_normal((cols, depth)) / np.sqrt(depth)).astype(np.float32)
        flops = 2.0 * rows * depth * cols
        xm, packed = mx.array(x), kernels.pack_linear(mx.array(w), precision="fp32")
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        sides = {
            "native": functools.partial(
                lambda a, p, n: mx.eval(kernels.linear(a, p, n, threads=args.threads)),
                xm,
                packed,
                cols,
            ),
            "torch": functools.partial(torch.nn.functional.linear, xt, wt),
        }
        best = dict.fromkeys(sides, 0.0)
        for _ in range(3):
            for name, fn in sides.items():
                best[name] = max(best[name], rate(fn, flops, args.seconds))
        ours, theirs = best["native"], best["torch"]
        rows_out.append({"shape": [rows, depth, cols], "native": ours, "torch": theirs})
        print(
            f"| {rows} x {depth} x {cols} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "shapes": rows_out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

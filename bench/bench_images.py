"""Benchmark jupyter_mlx_embed's image-text embeddings (SigLIP) against transformers.

A random-weight SigLIP at the published shapes and layout (``tests/siglip_models.py``; speed
does not depend on weight values), built once into ``--root``. Run::

    python bench/bench_images.py [--model NAME] [--layers N] [--rounds N] [--quick]
                                 [--precision fp32|bf16|int8] [--json OUT]

Two sides, each in its own long-lived, warmed-up process (``bench_models.Side``), taking turns
within each round (the order rotates per round):

- MLX: a ``jupyter_mlx_embed.Worker`` (cache off; ``--precision``: its ``precision`` setting,
  fp32 by default), one request per workload: pictures decoded and resized on its preparing
  pool, batched by the worker;
- torch: transformers as its model card runs SigLIP: ``SiglipImageProcessor`` (PIL) and
  ``SiglipModel.get_image_features`` in batches of 32 (texts: the tokenizer with
  ``padding="max_length"`` and ``get_text_features``), float32, torch's default threads.

Workloads (deterministic): photos (640 x 480 JPEGs of smooth shapes: what a folder of photos
holds; decoding and resizing included, as a user pays them), pictures already at the
model's size (PNG: the towers' own speed), and captions for the text tower. Reported:
items/s, median (best) round, MLX's paired per-round ratio (median [min-max]; > 1: MLX
faster), CPU cores busy, single-picture latency p50, time to first vector, peak RSS, and the
min cosine between the sides' vectors.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_embed
import bench_models
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.siglip_models import SIGLIPS, build_siglip  # noqa: E402

SIDES = ("mlx", "torch")
NAMES = {"mlx": "MLX", "torch": "transformers SiglipModel (torch)"}
BATCH_SIZE = 32
TARGET = 1.2  # issue #26: pictures per second, MLX / transformers
med = statistics.median


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A JPEG of smooth gradients and a few ellipses (compresses and decodes like a photo)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, (x + y) / (w + h)], axis=-1) * rng.uniform(80, 200, 3)
    picture = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
        box = (int(x0), int(y0), int(x0 + rng.integers(40, 300)), int(y0 + rng.integers(40, 200)))
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    picture = picture.filter(ImageFilter.GaussianBlur(2))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue()


def at_size(seed: int, side: int) -> bytes:
    """A PNG already at the model's size (no resizing on either side)."""
    from PIL import Image

    picture = Image.open(io.BytesIO(photo(seed))).resize((side, side))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


CAPTIONS = [
    "a photo of a red car parked by the sea",
    "two dogs playing in the snow",
    "a bar chart of monthly sales",
    "a bowl of soup on a wooden table",
    "the skyline of a city at night",
    "a handwritten note on yellow paper",
    "a cat asleep on a laptop keyboard",
    "mountains reflected in a calm lake",
]


def _load_side(side: str, folder: Path, _: str) -> tuple[Callable[[list[Any]], np.ndarray], dict]:
    """The side's function (a homogeneous list of picture bytes or caption strings ->
    normalised vectors), warmed up, and its versions."""
    if side == "torch":
        import torch
        import transformers
        from PIL import Image
        from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

        model = SiglipModel.from_pretrained(folder, dtype=torch.float32).eval()
        processor = AutoImageProcessor.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)

        def run(items: list[Any]) -> np.ndarray:
            out = []
            with torch.inference_mode():
                for start in range(0, len(items), BATCH_SIZE):
                    part = items[start : start + BATCH_SIZE]
                    if isinstance(part[0], str):
                        ids = tokenizer(
                            part, padding="max_length", truncation=True, return_tensors="pt"
                        )
                        out.append(model.get_text_features(**ids).pooler_output)
                    else:
                        pictures = [Image.open(io.BytesIO(b)) for b in part]
                        pixels = processor(pictures, return_tensors="pt")
                        out.append(model.get_image_features(**pixels).pooler_output)
            vectors = torch.cat(out).numpy()
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        info = {"transformers": transformers.__version__, "torch": torch.__version__}
        info["torch_threads"] = torch.get_num_threads()
    else:
        import jupyter_mlx_embed
        from jupyter_mlx_embed import EngineConfig, Worker
        from jupyter_mlx_embed.options import EmbedOptions

        # The environment's settings (the parent's --precision), the cache off.
        worker = Worker(EngineConfig.from_env(cache=False, model_roots=(str(folder.parent),)))
        options = EmbedOptions(model=folder.name)

        def run(items: list[Any]) -> np.ndarray:
            if isinstance(items[0], str):
                return worker.submit(items, options).result().vectors
            return worker.submit_images(items, options).result().vectors

        run(CAPTIONS[:1])
        data = worker.info()
        kernels = data.get("native_kernels") or {}
        info = {
            "jupyter_mlx_embed": jupyter_mlx_embed.__version__,
            "mlx": data.get("mlx_version"),
            "native_kernels": kernels.get("isa")
            if kernels.get("loaded")
            else kernels.get("detail"),
            "precision": data.get("precision", {}).get("in_use"),
        }
    run([photo(0)])  # warm up both towers
    run(CAPTIONS[:2])
    return run, info


_FIRST_VECTOR = {
    "torch": "import io, torch\nfrom PIL import Image\n"
    "from transformers import AutoImageProcessor, SiglipModel\n"
    "m = SiglipModel.from_pretrained({folder!r}).eval()\n"
    "p = AutoImageProcessor.from_pretrained({folder!r})\n"
    "x = p(Image.new('RGB', (64, 48), 'red'), return_tensors='pt')\n"
    "with torch.inference_mode(): m.get_image_features(**x)\n",
    "mlx": "import jupyter_mlx_embed\nfrom PIL import Image\n"
    "jupyter_mlx_embed.embed_images(Image.new('RGB', (64, 48), 'red'), model={name!r})\n",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="siglip-base-patch16-224", choices=list(SIGLIPS))
    parser.add_argument("--layers", type=int, help="fewer layers per tower than published")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, a quarter of the work")
    parser.add_argument("--root", type=Path, default=bench_models.DEFAULT_ROOT, help="models")
    bench_models.precision_argument(parser)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    mlx_name = bench_models.use_precision(args.precision)
    rounds = 2 if args.quick else args.rounds
    count = 16 if args.quick else 64
    folder = build_siglip(args.model, args.root, args.layers)
    side = json.loads((folder / "preprocessor_config.json").read_text())["size"]["height"]
    work = {
        f"{count} photos (640 x 480 JPEG), pictures/s": [photo(i) for i in range(count)],
        f"{count} pictures at {side} x {side} (PNG), pictures/s": [
            at_size(i, side) for i in range(count)
        ],
        f"{count * 2} captions, texts/s": [CAPTIONS[i % 8] + f" #{i}" for i in range(count * 2)],
    }
    print(f"[{args.model}] time to first vector: one fresh process per side ...", flush=True)
    first = {s: [bench_models.first_vector_s(s, folder, None, _FIRST_VECTOR)] for s in SIDES}
    print(f"[{args.model}] starting the long-lived processes and warming up ...", flush=True)
    procs = {s: bench_models.Side(s, folder, None, _load_side) for s in SIDES}
    cosine = {}
    for w, items in work.items():
        vectors = {s: procs[s].ask("batch", items)[2] for s in SIDES}
        cosine[w] = float(np.min(np.sum(vectors["mlx"] * vectors["torch"], axis=1)))
    rate: dict[str, dict[str, list[float]]] = {w: {s: [] for s in SIDES} for w in work}
    busy: dict[str, list[float]] = {s: [] for s in SIDES}
    p50: dict[str, list[float]] = {s: [] for s in SIDES}
    single = work[next(iter(work))][:8]
    for r in range(rounds):
        order = list(SIDES[r % 2 :] + SIDES[: r % 2])
        line = f"[{args.model}] round {r + 1}/{rounds} ({', '.join(order)})"
        for w, items in work.items():
            for s in order:
                wall, cores, _ = procs[s].ask("batch", items)
                rate[w][s].append(len(items) / wall)
                busy[s].append(cores)
            line += f"  {w.split(',')[0]}: " + ", ".join(
                f"{s} {rate[w][s][-1]:,.1f}" for s in SIDES
            )
        for s in order:
            p50[s].append(med(procs[s].ask("each", single)) * 1e3)
        print(line, flush=True)
    rss = {s: procs[s].ask("rss") for s in SIDES}
    info = {s: procs[s].info for s in SIDES}
    for proc in procs.values():
        proc.close()

    def row(label: str, values: dict[str, list[float]], fmt: str, higher: bool) -> str:
        best = max if higher else min
        cells = [f"{med(values[s]):{fmt}} ({best(values[s]):{fmt}})" for s in SIDES]
        pairs = zip(values["torch"], values["mlx"], strict=True)
        ratio = bench_embed._spread([m / t if higher else t / m for t, m in pairs])
        return f"| {label} | {' | '.join(cells)} | {ratio} |"

    config = json.loads((folder / "config.json").read_text())
    layers = config["vision_config"]["num_hidden_layers"]
    lines = [
        f"### {args.model} ({SIGLIPS[args.model].repo} shapes, {layers} layers per tower)",
        "",
        f"| Measure | {mlx_name} | {NAMES['torch']} | MLX / transformers, paired |",
        "|---|---:|---:|---:|",
    ]
    lines += [row(w, rate[w], ",.1f", higher=True) for w in work]
    lines.append(row("one photo, latency p50, ms", p50, ".1f", higher=False))
    lines.append(row("time to first vector, s", first, ".2f", higher=False))
    cores = " | ".join(bench_embed._spread(busy[s], unit="") for s in SIDES)
    lines.append(f"| CPU cores busy | {cores} | - |")
    lines.append(f"| peak RSS, MiB | {rss['mlx']:,.0f} | {rss['torch']:,.0f} | - |")
    lines.append(
        "\nMin cosine between the sides' vectors: "
        + ", ".join(f"{w.split(',')[0]} {c:.6f}" for w, c in cosine.items())
    )
    photos = rate[next(iter(work))]
    ratio = med(m / t for t, m in zip(photos["torch"], photos["mlx"], strict=True))
    lines.append(
        f"\nIssue #26 target: photos per second >= {TARGET}x transformers: "
        + ("met" if ratio >= TARGET else "MISSED")
        + f" ({ratio:.2f}x)"
    )
    lines.append(f"\nCPU: {bench_models.cpu_description()}\nversions: {json.dumps(info)}")
    report = "\n".join(lines)
    print("\n" + report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "rate": rate,
                    "p50_ms": p50,
                    "first_s": first,
                    "rss_mib": rss,
                    "cores": busy,
                    "cosine": cosine,
                    "versions": info,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

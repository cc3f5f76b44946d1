"""Why the from-scratch seeds did not learn (issue #15): a proxy ablation on mtl_oca.

    python benchmarks/seed_ablation.py --runs runs/ablate A-base,B-norm,C-aux,E-bn,G-bn-lam08

The proxy: mtl_oca at 64×64 (a quarter of its default input's pixels), 400 scanner-style
phantoms drawn at the demo's acquisition sizes with the ultrasound augmentation, 4 epochs,
batch 8, AdamW 1e-3, seed 0, one thread; validated on 96 phantoms of another seed stream
(Dice at the mask resolution, both-empty frames count 1; lesion Dice over frames with a lesion).
Each variant changes one thing against its base; ``bn`` variants need the model with BatchNorm
on the pooled vector (export/models/mtl_oca.py today), the others the model before it (git
``fe9089e``: ``git worktree add /tmp/before fe9089e`` and run this script from there). Variants
E-H ran before the lesion-prior initialization (``mask_prior=None`` rebuilds them); the
``prior`` variants use today's models, whose lesion logits start at the prior, and
``nmtnet-*`` runs nmtnet on the same proxy, ``acsnet-*`` acsnet's two classifier poolings.
Results of the runs: ``benchmarks/results/seed-ablation-mtl_oca.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

#: Input standardization measured on 120 training phantoms at 128×128 (image, gdm).
NORM = {"input_mean": [0.35, 0.025], "input_std": [0.22, 0.03]}
VARIANTS = {
    "A-base": {},
    "B-norm": {"model_kwargs": NORM},
    "C-aux": {"aux_weight": 0.4},
    "E-bn": {},
    "F-bn-norm-aux": {"model_kwargs": NORM, "aux_weight": 0.4},
    "G-bn-lam08": {"lam": 0.8},
    "H-bn-pos4": {"pos_weight": 4.0},
    # Since the lesion-prior initialization (export/models/_contract.py init_mask_logits):
    "I-bn-prior": {},  # today's mtl_oca as built
    "nmtnet-base": {"arch": "nmtnet"},
    "nmtnet-prior": {"arch": "nmtnet"},
    # acsnet's classifier (its 256x256 run: AUC 0.53, training CE at ln 3): the whole-frame
    # average of each scale against lesion-pooled + global (NMTNet's pooling); λ 0.8 as that run.
    "acsnet-global": {"arch": "acsnet", "lam": 0.8, "model_kwargs": {"cls_pool": "global"}},
    "acsnet-lesion": {"arch": "acsnet", "lam": 0.8, "model_kwargs": {"cls_pool": "lesion"}},
}
#: Variants that ran before the prior initialization; rebuilt with mask_prior=None.
_NO_PRIOR = ("E-bn", "F-bn-norm-aux", "G-bn-lam08", "H-bn-pos4", "nmtnet-base")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("variants", help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--runs", type=Path, default=Path("runs/ablate"))
    args = p.parse_args()
    from export.train import train

    for name in args.variants.split(","):
        kw = dict(
            data="synthetic",
            epochs=4,
            batch_size=8,
            lr=1e-3,
            seed=0,
            device="cpu",
            size=64,
            frame_sizes=[(128, 128), (256, 256), (480, 640), (600, 800)],
            n_train=400,
            n_val=96,
            augment="ultrasound",
            threads=1,
            progress=False,
            resume=True,
        )
        v = dict(VARIANTS[name])
        arch = v.pop("arch", "mtl_oca")
        if name in _NO_PRIOR:
            v["model_kwargs"] = {**v.get("model_kwargs", {}), "mask_prior": None}
        kw.update(v)
        t = time.time()
        train(arch, out_dir=args.runs / name, **kw)
        m = json.loads((args.runs / name / "metrics.json").read_text())
        per_epoch = [
            (round(e["val"]["dice"], 3), e["val"]["dice_lesion"], round(e["val"]["accuracy"], 3))
            for e in m["epochs"]
        ]
        print(name, round(time.time() - t), per_epoch, flush=True)


if __name__ == "__main__":
    main()

"""Small real artifacts for runtime tests: tiny torch models exported to ONNX with metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _tiny_artifact(path: Path, with_features: bool) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from export.models import MultiTaskModel
    from export.onnx_export import embed_metadata, to_onnx_file
    from sdk.artifact import Metadata

    class Tiny(MultiTaskModel):
        """Dark blobs are lesions: mask logit = 12 * (0.3 - local mean of the image)."""

        input_channels = ("image", "gdm")
        input_size = (128, 128)
        has_features = with_features

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.pool = torch.nn.AvgPool2d(4)
            self.cls = torch.nn.Linear(2, 3)
            self.head1 = torch.nn.Linear(2, 8)
            self.head2 = torch.nn.Linear(8, 3)

        def forward(self, x):
            p = self.pool(x)
            out = {"mask_logits": 12.0 * (0.3 - p[:, :1]), "class_logits": self.cls(p.mean((2, 3)))}
            if with_features:
                out["features"] = self.pool(p)  # (B, 2, h/16, w/16)
            return out

        def head_weights(self):
            return {
                "w1": self.head1.weight,
                "b1": self.head1.bias,
                "w2": self.head2.weight,
                "b2": self.head2.bias,
            }

    m = Tiny().eval()
    onnx_path = to_onnx_file(m, (m.example_input(1),), path)
    head = None
    if with_features:
        head = {k: v.detach().numpy() for k, v in m.head_weights().items()}
    md = Metadata(
        arch="tiny",
        class_names=("normal", "benign", "malignant"),
        channels=m.input_channels,
        input_size=m.input_size,
        mean=(0.0, 0.0),
        std=(1.0, 1.0),
        outputs={
            "mask_logits": "mask_logits",
            "class_logits": "class_logits",
            "features": "features" if with_features else None,
        },
        head=head,
        min_lesion_area_px=50,
    )
    return embed_metadata(onnx_path, md)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return _tiny_artifact(tmp_path_factory.mktemp("art") / "tiny.onnx", with_features=False)


@pytest.fixture(scope="session")
def tiny_features_onnx(tmp_path_factory) -> Path:
    return _tiny_artifact(tmp_path_factory.mktemp("art") / "tiny_feat.onnx", with_features=True)


@pytest.fixture(scope="session")
def phantom_frame() -> tuple[np.ndarray, np.ndarray]:
    from sdk import synthetic

    img, mask, _ = synthetic.phantom("benign", size=(300, 400), seed=11, cyst=True)
    return img, mask

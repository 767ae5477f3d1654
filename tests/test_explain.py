"""Grad-CAM: the heatmap points at the region that carries the class signal."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.tasks.explain import gradcam, last_conv_stage
from tests.conftest import require_extra

require_extra("captum", "explain")

pytestmark = pytest.mark.slow  # the module trains a small square detector first

SIZE, PATCH = 64, 16
CORNERS = {"top-left": (0, 0), "bottom-right": (SIZE - PATCH, SIZE - PATCH)}


def synthetic_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images; class 1 has a bright square at a random quadrant-aligned place, class 0 none."""
    images = torch.rand(n, 3, SIZE, SIZE, generator=generator) * 0.5
    labels = torch.randint(0, 2, (n,), generator=generator)
    for i in torch.nonzero(labels).flatten().tolist():
        top, left = (torch.randint(0, 2, (2,), generator=generator) * (SIZE - PATCH)).tolist()
        images[i, :, top : top + PATCH, left : left + PATCH] = 1.0
    return images, labels


@pytest.fixture
def square_detector() -> ResNetClassifier:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = ResNetClassifier("resnet18", num_classes=2, class_names=["plain", "square"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        images, labels = synthetic_batch(32, generator)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_gradcam_peaks_in_the_region_carrying_the_class_signal(square_detector):
    """One test for both corners: the detector is trained once (a parametrized test could be split over
    xdist workers, each training its own)."""
    for corner, (top, left) in CORNERS.items():
        image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 0.5
        image[:, :, top : top + PATCH, left : left + PATCH] = 1.0
        assert square_detector(image).argmax().item() == 1, corner  # it learned the square

        heatmap = gradcam(square_detector, image, torch.tensor([1]), last_conv_stage(square_detector))[0]
        assert heatmap.shape == (SIZE, SIZE) and heatmap.max() == pytest.approx(1.0)
        row, col = divmod(int(heatmap.argmax()), SIZE)
        half = SIZE // 2
        assert (row < half, col < half) == (top < half, left < half), corner  # the peak in the square's quadrant
        first_row, first_col = top // half * half, left // half * half
        quadrant = heatmap[first_row : first_row + half, first_col : first_col + half]
        assert quadrant.mean() > 2 * heatmap.mean() - quadrant.mean(), corner  # brighter than the other three together


def test_last_conv_stage_of_a_torchvision_resnet_is_layer4():
    assert last_conv_stage(ResNetClassifier("resnet18", num_classes=2)) == "backbone.layer4"


def test_cli_explain_writes_an_overlay_per_image(trained_digits_run, tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    for name, value in (("a", 40), ("b", 200)):
        Image.new("RGB", (32, 32), (value,) * 3).save(folder / f"{name}.png")
    (folder / "c.png").write_bytes(b"")  # empty: skipped with a warning, not fatal
    command = [
        sys.executable, "-m", "lightning_resnet.explain",
        f"ckpt_path={trained_digits_run[1]['best_checkpoint']}", f"input={folder}", "target=3",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "run" / "gradcam").iterdir())
    assert written == ["a.gradcam.png", "b.gradcam.png"]
    assert "c.png" in result.stdout + result.stderr

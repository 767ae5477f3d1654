"""The explain task: Grad-CAM heatmaps, `python -m lightning_resnet.explain ckpt_path=... input=<file|folder>`.

Uses Captum's `LayerGradCam` (extra: `explain`) on the backbone's last convolutional stage (or
`layer=`), for the predicted class or `target=`, and writes one overlay PNG per input image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from lightning_resnet import CONFIG_DIR
from lightning_resnet.errors import ConfigError, exit_on_config_error
from lightning_resnet.inference.predictor import check_images, image_dataset, input_images
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.reporting.collector import denormalize
from lightning_resnet.reporting.figures import use_fonts_for
from lightning_resnet.utils import require

log = logging.getLogger(__name__)


def last_conv_stage(model: ResNetClassifier) -> str:
    """Name of the backbone's last child holding a convolution (`backbone.layer4` for torchvision ResNets)."""
    stages = [
        name
        for name, child in model.backbone.named_children()
        if any(isinstance(m, nn.Conv2d) for m in child.modules())
    ]
    if not stages:
        raise ConfigError("layer: the backbone has no convolutional stage; pass layer=<module name>")
    return f"backbone.{stages[-1]}"


def gradcam(model: ResNetClassifier, images: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) for class `target` at `layer`, upsampled to the input and scaled to [0, 1]."""
    attr = require("captum.attr", "explain")
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"layer={layer!r} is not a module of the model; e.g. {last_conv_stage(model)}") from None
    cam = attr.LayerGradCam(model, module).attribute(images, target=target, relu_attributions=True)
    cam = attr.LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp(min=1e-12).view(-1, 1, 1)
    return (cam / peak).detach()


def overlay_figure(image: np.ndarray, heatmap: np.ndarray, title: str, alpha: float) -> plt.Figure:
    """The image, and the image with the heatmap (jet) blended over it."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6), constrained_layout=True)
    axes[0].imshow(image)
    axes[1].imshow(image)
    axes[1].imshow(heatmap, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def class_index(target: str | int | None, class_names: list[str]) -> int | None:
    """`target=` as a class index: a class name or an index; None = the predicted class."""
    if target is None:
        return None
    if str(target) in class_names:
        return class_names.index(str(target))
    if isinstance(target, int) and 0 <= target < len(class_names):
        return target
    raise ConfigError(f"target={target!r} is not a class; valid: {', '.join(class_names)} (or an index)")


def run(cfg: DictConfig) -> list[Path]:
    model = ResNetClassifier.from_checkpoint(cfg.ckpt_path)
    class_names = [str(n) for n in model.hparams.class_names]
    use_fonts_for(class_names)  # Korean class names in the titles
    layer = cfg.layer or last_conv_stage(model)
    chosen = class_index(cfg.target, class_names)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = input_images(cfg.input)
    bad = check_images(paths, "skip")
    paths = [p for p in paths if str(p) not in bad]
    written: list[Path] = []
    for path, (image, _) in zip(paths, image_dataset(model, paths), strict=True):
        images = image.unsqueeze(0)
        with torch.no_grad():
            probs = model(images).softmax(dim=1)[0]
        target = int(probs.argmax()) if chosen is None else chosen
        heatmap = gradcam(model, images, torch.tensor([target]), layer)[0].numpy()
        shown = denormalize(images, model.preprocessing["mean"], model.preprocessing["std"])[0].permute(1, 2, 0).numpy()
        title = f"{path.name}: Grad-CAM for '{class_names[target]}' (p={probs[target]:.2f}) at {layer}"
        fig = overlay_figure(shown, heatmap, title, cfg.alpha)
        destination = out_dir / f"{path.stem}.gradcam.png"
        fig.savefig(destination, dpi=110)
        plt.close(fig)
        written.append(destination)
    log.info("%d Grad-CAM overlays written to %s", len(written), out_dir)
    return written


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="explain")
@exit_on_config_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()

"""The predict task: `python -m lightning_resnet.predict ckpt_path=... input=<file|folder> [output=...]`.

The checkpoint carries the class names and the preprocessing, so no data config is needed. With
`bad_images: skip` (the default) unreadable images do not stop the run: they are listed in the log
and in the output with their error. The work is `inference.predictor.predict_images`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_resnet import CONFIG_DIR
from lightning_resnet.errors import ConfigError, exit_on_config_error
from lightning_resnet.inference.predictor import Prediction, input_images, predict_images, resolve_device
from lightning_resnet.models.classifier import ResNetClassifier

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> list[Prediction]:
    if cfg.format not in cfg.formats:
        raise ConfigError(f"format={cfg.format!r}; valid: {', '.join(cfg.formats)}")
    if cfg.topk < 1:
        raise ConfigError(f"topk must be >= 1, got {cfg.topk}")
    model = ResNetClassifier.from_checkpoint(cfg.ckpt_path).to(resolve_device(cfg.device))
    class_names = [str(name) for name in model.hparams.class_names]
    paths = input_images(cfg.input)
    predictions = predict_images(
        model, paths, Path(cfg.input), cfg.batch_size, cfg.tta, cfg.bad_images, int(cfg.num_workers)
    )
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    instantiate(cfg.formats[cfg.format])(output, predictions, class_names, cfg.topk)
    failed = sum(p.probs is None for p in predictions)
    log.info("%d predictions written to %s (format=%s)", len(predictions) - failed, output, cfg.format)
    return predictions


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
@exit_on_config_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()

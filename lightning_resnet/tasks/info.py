"""The info task: `python -m lightning_resnet.info model=resnet50 data.image_size=224` prints the model's cost.

Composes the train config tree (`conf/info.yaml` extends `train.yaml`) and builds the model as
training would, weights and fine-tuning freeze included, without data loading or training. The head
has `num_classes` outputs (`num_classes=1000` for ImageNet figures; null = the data module's classes).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from torch import nn

from lightning_resnet import CONFIG_DIR
from lightning_resnet.builders import build, build_datamodule, pretrained_data_defaults
from lightning_resnet.errors import exit_on_config_error
from lightning_resnet.models.cost import ModelCost, model_cost


def describe(cfg: DictConfig) -> ModelCost:
    """The cost of `cfg.model` at the data's image size, with the first fine-tuning phase's freeze applied."""
    num_classes = cfg.get("num_classes") or build_datamodule(cfg).num_classes
    model = build(cfg.model, "model", _convert_="all", num_classes=num_classes)
    strategy = build(cfg.get("finetune"), "finetune")
    if strategy is not None:
        strategy.freeze_before_training(model)
    image_size = pretrained_data_defaults(cfg).get("image_size", cfg.data.image_size)
    return model_cost(nn.Sequential(model.backbone, model.head), int(image_size))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="info")
@exit_on_config_error
def main(cfg: DictConfig) -> None:
    print(f"{cfg.model.arch} (weights={cfg.model.get('weights')}): {describe(cfg).summary()}")


if __name__ == "__main__":
    main()

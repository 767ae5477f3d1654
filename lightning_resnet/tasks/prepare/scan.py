"""`python -m lightning_resnet.prepare scan data=<name> [data.root=...] [key=value ...]`.

Composes the same config tree as training, then decodes every image of every split (and the
prediction folder) and lists every unreadable file with its reason. Exit status 1 when any is bad.
The result is cached like the check at setup, so the next training run does not decode again.
"""

from __future__ import annotations

import logging
import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_resnet import CONFIG_DIR
from lightning_resnet.builders import build
from lightning_resnet.errors import ConfigError

USAGE = "usage: python -m lightning_resnet.prepare scan data=<name> [data.root=PATH] [key=value ...]"


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv) or any("=" not in arg for arg in argv):
        print(f"{USAGE}\n\n{__doc__}", file=sys.stderr)
        return 0 if "-h" in argv or "--help" in argv else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=argv)
        datamodule = build(cfg.data, "data")
        if not hasattr(datamodule, "scan"):
            print(f"data={OmegaConf.select(cfg, 'data._target_')}: an embedded dataset, no files to scan")
            return 0
        report = datamodule.scan(progress=sys.stderr.isatty())
    except (ConfigError, FileNotFoundError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.format())
    return 1 if report.bad else 0

"""lightning-resnet: train, fine-tune and compare ResNets with PyTorch Lightning and Hydra."""

from pathlib import Path

__version__ = "0.1.0"

_PACKAGE_DIR = Path(__file__).resolve().parent
# The Hydra config tree: inside the package in a wheel, `conf/` beside it in a checkout.
CONFIG_DIR = _PACKAGE_DIR / "conf" if (_PACKAGE_DIR / "conf").is_dir() else _PACKAGE_DIR.parent / "conf"

from lightning_resnet.sweeps.layout import register_resolvers  # noqa: E402 - after CONFIG_DIR, no cycle

register_resolvers()  # before Hydra composes any config of the package

"""Hydra plugins behind config choices: a missing one is named, with its extra, before Hydra starts.

Without this check Hydra reports only that `hydra/launcher/joblib` is not a known option.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

# override -> (plugin module, extra that installs it)
PLUGINS = {
    "launcher=gpus": ("hydra_plugins.hydra_joblib_launcher", "sweeps"),
    "launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "sweeps"),
    "launcher=ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "hparams_search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweeps"),
}


def missing_plugin_message(argv: Sequence[str]) -> str | None:
    """The install hint for the first override in `argv` whose plugin is not installed, else None."""
    for arg in argv:
        choice = re.sub(r"^[+~]", "", arg).replace(" ", "")
        if choice in PLUGINS:
            module, extra = PLUGINS[choice]
            if importlib.util.find_spec(module) is None:
                return (
                    f"{choice} needs the Hydra plugin {module.split('.')[-1]}, which is not installed: "
                    f"pip install 'lightning-resnet[{extra}]' (or make install EXTRAS=dev,{extra})"
                )
    return None

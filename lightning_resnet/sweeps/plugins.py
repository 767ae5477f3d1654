"""Hydra plugins behind config choices: a missing one is named, with its extra, before Hydra starts.

Without this check Hydra reports only that `hydra/launcher/joblib` is not a known option.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

# override -> (module it needs, extra that installs it)
PLUGINS = {
    "launcher=gpus": ("hydra_plugins.hydra_joblib_launcher", "sweeps"),
    "launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "sweeps"),
    "launcher=ray": ("ray", "ray"),  # our launcher (hydra_plugins/lightning_resnet_launchers) runs on Ray itself
    "hparams_search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweeps"),
}


def missing_plugin_message(argv: Sequence[str]) -> str | None:
    """The install hint for the first override in `argv` whose plugin is not installed, else None."""
    for arg in argv:
        choice = re.sub(r"^[+~]", "", arg).replace(" ", "")
        if choice in PLUGINS:
            module, extra = PLUGINS[choice]
            if importlib.util.find_spec(module) is None:
                what = f"the Hydra plugin {module.split('.')[-1]}" if module.startswith("hydra_plugins.") else module
                return (
                    f"{choice} needs {what}, which is not installed: "
                    f"pip install 'lightning-resnet[{extra}]' (or make install EXTRAS=dev,{extra})"
                )
    return None

"""The train command: `python -m lightning_resnet [overrides]` (also `python -m lightning_resnet.train` and
the `lightning-resnet` script); the task itself is `run` in `tasks/train.py`.

This module imports only Hydra and OmegaConf. The task (torch, Lightning, torchvision: seconds of imports)
is imported when a job starts, so a sweep's driver that sends its jobs to SLURM or Ray, `--help`, `--cfg`
and an override Hydra rejects all answer in about a second. The module's name, `train`, is Hydra's
job name (`train.log`, `rank_job_name`).
"""

import sys

import hydra
from omegaconf import DictConfig

from lightning_resnet import CONFIG_DIR
from lightning_resnet.errors import exit_on_config_error
from lightning_resnet.sweeps.plugins import missing_plugin_message


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@exit_on_config_error
def main(cfg: DictConfig) -> float | None:
    from lightning_resnet.sweeps.jobs import run_job
    from lightning_resnet.tasks.train import run

    return run_job(cfg, run)


def cli() -> None:
    """The command line: a launcher or sweeper plugin that is not installed is named with its extra."""
    message = missing_plugin_message(sys.argv[1:])
    if message:
        sys.exit(f"error: {message}")
    main()


if __name__ == "__main__":
    cli()

"""`python -m lightning_resnet [overrides]`: the train task, in `tasks/train.py`."""

from lightning_resnet.tasks.train import cli

if __name__ == "__main__":
    cli()

"""`python -m lightning_resnet [overrides]`: the train command, in `train.py`."""

from lightning_resnet.train import cli

if __name__ == "__main__":
    cli()

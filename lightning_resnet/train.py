"""`python -m lightning_resnet.train`: the train task (as `python -m lightning_resnet`), in `tasks/train.py`."""

from lightning_resnet.tasks.train import cli

if __name__ == "__main__":
    cli()

"""`python -m lightning_resnet [overrides]`: the train task."""

from lightning_resnet.train import main

if __name__ == "__main__":
    main()

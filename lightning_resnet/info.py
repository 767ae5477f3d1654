"""`python -m lightning_resnet.info`: the info task, in `tasks/info.py`."""

from lightning_resnet.tasks.info import main

if __name__ == "__main__":
    main()

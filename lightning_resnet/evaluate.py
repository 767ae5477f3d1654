"""`python -m lightning_resnet.evaluate`: the evaluate task, in `tasks/evaluate.py`."""

from lightning_resnet.tasks.evaluate import main

if __name__ == "__main__":
    main()

"""`python -m lightning_resnet.explain`: the explain task, in `tasks/explain.py`."""

from lightning_resnet.tasks.explain import main

if __name__ == "__main__":
    main()

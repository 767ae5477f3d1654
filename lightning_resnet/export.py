"""`python -m lightning_resnet.export`: the export task, in `tasks/export.py`."""

from lightning_resnet.tasks.export import main

if __name__ == "__main__":
    main()

"""`python -m lightning_resnet.summarize`: the summarize command, in `tasks/summarize.py`."""

import sys

from lightning_resnet.tasks.summarize import main

if __name__ == "__main__":
    sys.exit(main())

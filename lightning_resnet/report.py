"""`python -m lightning_resnet.report <folder>`: the report command, in `tasks/report.py`."""

import sys

from lightning_resnet.tasks.report import main

if __name__ == "__main__":
    sys.exit(main())

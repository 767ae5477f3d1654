"""`python -m lightning_resnet.convert`: the convert command, in `tasks/convert.py`."""

import sys

from lightning_resnet.tasks.convert import main

if __name__ == "__main__":
    sys.exit(main())

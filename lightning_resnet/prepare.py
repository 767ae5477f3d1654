"""`python -m lightning_resnet.prepare`: the prepare command, in `tasks/prepare/`."""

import sys

from lightning_resnet.tasks.prepare import main

if __name__ == "__main__":
    sys.exit(main())

"""Data preparation commands: `python -m lightning_resnet.prepare <command> ...`.

Each command is a module of this package with `main(argv) -> int` (the exit status).
"""

COMMANDS = {
    "scan": "decode every image of a dataset config and list every unreadable file",
    "openimages": "crop Open Images boxes into an ImageFolder (the surveillance dataset)",
}

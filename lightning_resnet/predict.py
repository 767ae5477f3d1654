"""`python -m lightning_resnet.predict`: the predict task, in `tasks/predict.py`."""

from lightning_resnet.tasks.predict import main

if __name__ == "__main__":
    main()

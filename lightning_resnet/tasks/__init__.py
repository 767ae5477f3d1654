"""Entry points, one module per task; each is also `python -m lightning_resnet.<task>` through a shim.

train (also `python -m lightning_resnet`), evaluate, predict, explain, export, info, convert,
summarize (a sweep's comparison table), report (a run's or sweep's report.html), prepare (dataset
preparation commands).
"""

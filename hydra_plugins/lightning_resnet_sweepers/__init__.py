"""Hydra plugins of lightning-resnet. `hydra_plugins` is a namespace package shared with the installed
plugins (no `hydra_plugins/__init__.py`): Hydra only instantiates sweepers and launchers found there."""

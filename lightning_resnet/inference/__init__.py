"""Inference from checkpoints: the one prediction path, output writers, and exporters."""

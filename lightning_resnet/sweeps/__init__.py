"""Sweeps: folder layout, device slots, per-job bookkeeping and the comparison report."""

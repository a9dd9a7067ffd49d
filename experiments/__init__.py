"""Experiments on top of ssljax: the sweep runner, grids, the quickstart, benchmarks, results.

Scripts here may define flags (`python -m experiments.sweep --grid=...`); library code lives
in `ssljax/`.
"""

"""Deterministic simulation of durakv nodes: the real engine over a simulated clock, disk and network.

One seed reproduces a run (`python -m tests.sim.run --seed N`). See README.md in this folder.
"""

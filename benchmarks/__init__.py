"""creditgym benchmarks, installed as `creditgym.benchmarks` and run by `creditgym bench`.

A top layer (ARCHITECTURE.md "Layers"): it may import every part of creditgym, and nothing in the
library imports it. `reliability` is the hostile-input suite of docs/reliability.md.
"""

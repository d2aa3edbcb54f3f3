"""Analysis utilities: speed/memory benchmarks (``benchmark``)."""

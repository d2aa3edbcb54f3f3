"""Analysis utilities: speed/memory benchmarks (``benchmark``), global-query
attention maps and Grad-CAM (``visualization``)."""

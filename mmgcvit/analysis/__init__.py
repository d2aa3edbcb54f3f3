"""Analysis code behind ``tools/analysis_tools``: speed/memory benchmarks
(``benchmark``), parameter and FLOP counts (``complexity``), global-query
attention maps and Grad-CAM (``visualization``), loss and metric curves
of a run (``curves``)."""

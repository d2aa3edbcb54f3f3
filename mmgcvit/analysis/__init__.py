"""Analysis code behind ``tools/analysis_tools``: config loading, model
building and FLOP counting shared by the tools (``complexity``), speed and
memory figures (``benchmark``), GC ViT's global-query attention maps
(``visualization``), loss and metric curves of a run (``curves``)."""

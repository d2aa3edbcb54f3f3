"""Small shared helpers: the torch-version lookups (``torch_compat``) and the
one atomic file writer (``fileio``)."""

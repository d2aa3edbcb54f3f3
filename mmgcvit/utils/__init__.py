"""Small shared helpers: the atomic file writer."""

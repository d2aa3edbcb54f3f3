"""Small shared helpers: torch-version lookups and the atomic file writer."""

"""The five stages, each over components of one resident base pipeline (shared via from_pipe)."""

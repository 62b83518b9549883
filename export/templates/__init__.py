"""Files copied into the model repository by `preedit export` (not imported)."""

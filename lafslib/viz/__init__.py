"""lafslib.viz."""

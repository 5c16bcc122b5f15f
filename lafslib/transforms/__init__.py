"""lafslib.transforms."""

"""lafslib.data."""

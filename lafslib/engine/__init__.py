"""lafslib.engine."""

"""lafslib.layers."""

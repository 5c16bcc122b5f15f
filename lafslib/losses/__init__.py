"""lafslib.losses."""

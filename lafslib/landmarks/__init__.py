"""lafslib.landmarks."""

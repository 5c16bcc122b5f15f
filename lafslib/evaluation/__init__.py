"""lafslib.evaluation."""

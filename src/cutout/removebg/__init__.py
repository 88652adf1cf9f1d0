"""remove.bg compatibility (``/v1.0``): its parameters and its output geometry, Flask-free."""

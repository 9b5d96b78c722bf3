"""graphnet's version, at the bottom of the layers so that any of them may read it."""

__version__ = "0.2.0"

"""The ``advisor`` command line (Typer). Commands are thin wrappers over package functions."""

"""The ``mlctl`` command: a thin layer over the library (``app`` is the root, one module per command group)."""

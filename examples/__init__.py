"""Worked examples of macattr, run from the repository's root (``python -m examples.ram ...``)."""

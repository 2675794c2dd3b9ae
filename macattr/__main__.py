"""``python -m macattr``: the ``macattr`` command."""

from macattr.cli import entry

entry()

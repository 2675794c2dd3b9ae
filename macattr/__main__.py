"""``python -m macattr``: the ``macattr`` command."""

import sys

from macattr.cli import main

sys.exit(main())

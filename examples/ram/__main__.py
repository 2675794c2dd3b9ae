"""``python -m examples.ram``: the RAM pipeline's command (see [`cli`][examples.ram.cli])."""

import sys

from .cli import main

sys.exit(main())

"""``python -m shared.cli``: the ``gater`` command."""

import sys

from shared.cli import main

sys.exit(main())

"""``python -m esdb_gater.cli``: the ``gater`` command."""

import sys

from esdb_gater.cli import main

sys.exit(main())

"""``python -m metatune`` runs the command line."""

import sys

from metatune.cli import main

sys.exit(main())

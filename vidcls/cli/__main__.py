"""``python -m vidcls.cli`` runs the ``vidcls`` program."""

import sys

from vidcls.cli import main

sys.exit(main())

"""``python -m lafslib.cli``: the ``lafs`` command (also under ``torchrun -m lafslib.cli``)."""

import sys

from lafslib.cli import main

sys.exit(main())

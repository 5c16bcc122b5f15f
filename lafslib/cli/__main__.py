"""``python -m lafslib.cli``: the ``lafs`` command (also under ``torchrun -m lafslib.cli``)."""

import sys

from lafslib.cli.main import main

sys.exit(main())

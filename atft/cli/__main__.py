"""``python -m atft.cli``: the ``atft`` command."""

import sys

from atft.cli import main

sys.exit(main())

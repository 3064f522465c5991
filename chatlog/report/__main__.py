"""``python -m chatlog.report``: see :mod:`chatlog.report`."""

import sys

from chatlog.report import main

sys.exit(main())

"""`python -m preedit.perf.dashboards write|queries`."""

import sys

from . import main

sys.exit(main())

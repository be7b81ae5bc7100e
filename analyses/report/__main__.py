"""`python -m analyses.report`: the command lives in analyses.report (its package)."""

import sys

from analyses.report import main

sys.exit(main())

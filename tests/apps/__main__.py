"""`python -m tests.apps`: make the Go and JavaScript SDK apps ready (see tests/apps/__init__.py)."""

import sys

from tests.apps import main

sys.exit(main())

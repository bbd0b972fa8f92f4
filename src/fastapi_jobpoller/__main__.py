"""`python -m fastapi_jobpoller ...`: the `jobpoller` command."""

import sys

from .cli import main

sys.exit(main())

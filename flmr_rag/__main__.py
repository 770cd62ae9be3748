"""Allow ``python -m flmr_rag`` as a synonym of the ``flmr-rag`` command."""

import sys

from flmr_rag.cli import main

sys.exit(main())

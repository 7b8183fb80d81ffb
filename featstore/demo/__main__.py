"""``python -m featstore.demo OUT_DIR [--n N] ...``: write the demo dataset."""

import sys

from featstore.demo.dataset import main

sys.exit(main())

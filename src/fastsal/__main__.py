import sys

from fastsal.cli import main

sys.exit(main())

"""`python -m rt.bench ...`: the same as `rt bench ...`."""
import sys

from . import main

sys.exit(main())

"""`python -m ctrflow.pipelines.cli`: the same as the `ctrflow` console script."""

import sys

from ctrflow.pipelines.cli import main

sys.exit(main())

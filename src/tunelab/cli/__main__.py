"""`python -m tunelab.cli VERB ...`, the same as `tunelab VERB ...`."""

from tunelab.cli import main

raise SystemExit(main())

"""`python -m tunelab VERB ...` (what torchrun runs: `torchrun ... -m tunelab finetune ...`),
the same as `tunelab VERB ...`."""

from tunelab.cli import main

raise SystemExit(main())

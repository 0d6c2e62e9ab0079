"""The run folder, and nothing else owns it: `marker` (the one RunMarker, written and read only
there), `workdir` (`.partial` folders, resume, atomic writes), `save` (weights, metrics,
finishing a run), `open` (open any run for any verb). Import the submodules: this package's
own import costs nothing (no torch)."""

"""Models: where they come from (`sources`), what family they are (`families`), options
(`options`) and loading them for a task (`load`). Import the submodules: this package's own
import costs nothing (no torch), so `--help` stays fast."""

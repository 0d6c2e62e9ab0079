"""CLI verbs that live in their own modules (registered in tunelab.cli.VERB_MODULES)."""

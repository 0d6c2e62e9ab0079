"""What each verb does, start to end. `tunelab.api` re-exports them; the CLI calls only api."""

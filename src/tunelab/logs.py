"""What tunelab prints while it works: `say()` for progress lines, `quiet_libraries()` to keep
the libraries underneath from drowning them."""

from __future__ import annotations

import logging
import os


def say(msg: str, quiet: bool = False) -> None:
    """Print one progress line (flushed at once), unless `quiet`."""
    if not quiet:
        print(msg, flush=True)


def quiet_libraries() -> None:
    """Silence transformers' info logs and progress bars, and the warnings users cannot act on.

    Imports nothing heavy: transformers reads the environment when it is first imported, so a
    verb that fails on its arguments answers before torch or transformers load."""
    import sys
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # peft calls a transformers property that transformers 5.x deprecates: not the user's doing
    warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
    # torchao (imported by transformers/peft when installed) reports its optional GPU kernels
    # missing on a CPU machine, and torch's pytree warns about torchao's enums: noise to a user
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported: its settings are read, set them
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

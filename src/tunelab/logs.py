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
    Imports transformers: call it only when a verb is about to do real work."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft calls a transformers property that transformers 5.x deprecates: not the user's doing
    warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
    # torchao (imported by transformers/peft when installed) reports its optional GPU kernels
    # missing on a CPU machine, and torch's pytree warns about torchao's enums: noise to a user
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

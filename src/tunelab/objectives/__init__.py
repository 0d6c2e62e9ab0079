"""Pre-training objectives, one module each: clm, mlm, nsp (also mlm+nsp), rtd.

Each module exposes the same plug: `FAMILY`, `SENTENCES` (needs sentence boundaries),
`separator(tok)` (token between packed documents), `build_model(p, tok, source)`,
`dataset(store, tok, p, limit)`, `make_collate(tok, p, store, generator)` (examples -> batch,
the corruption done there by pure functions taking a torch.Generator), `eval_sums(model,
batch[, generator])` (summed validation metrics) and `save(model, folder)`. The model's
`forward(**batch).loss` is what the one training loop minimises; a wrapper module around
the saved model (heads.MaskedLM, nsp.MlmNsp, rtd.RtdModel) names that model `kept`.

Imported lazily (this package's import costs nothing): `get_objective(name)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tunelab.errors import TunelabError
from tunelab.objectives.options import OBJECTIVES

_MODULES = {"clm": "clm", "mlm": "mlm", "nsp": "nsp", "mlm+nsp": "nsp", "rtd": "rtd"}


def get_objective(name: str) -> ModuleType:
    """The module implementing objective `name`."""
    if name not in _MODULES:
        raise TunelabError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
    return importlib.import_module(f"tunelab.objectives.{_MODULES[name]}")

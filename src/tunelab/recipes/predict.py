"""`tunelab predict`: label and class probabilities for texts, with a classification run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError


def predict(
    run_dir: str | Path,
    texts: list[str],
    batch_size: int = 64,
    quiet: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    zero_shot: str | None = None,
    labels: list[str] | str | None = None,
    zero_shot_options: Any = None,
    max_length: int = 256,
) -> list[dict[str, Any]]:
    """Label and class probabilities for each text, in input order, with the model on
    `device` in `dtype` (`models.precision`).

    With `zero_shot` ("choice" or "likelihood"), `run_dir` is a decoder (a model name or a
    causal_lm run) that picks one of `labels` for each text from a prompt, untrained
    (`recipes.zero_shot.predict_zero_shot`; choice mode gives no probabilities).

    Raises:
        TunelabError: no texts, a bad batch size, or a folder that is no classification run.
    """
    if zero_shot is not None:
        from tunelab.recipes.zero_shot import predict_zero_shot

        if batch_size < 1:
            raise TunelabError(f"--batch-size must be at least 1, got {batch_size}")
        return predict_zero_shot(
            str(run_dir),
            texts,
            labels,
            zero_shot,
            zero_shot_options,
            batch_size,
            max_length,
            quiet,
            dtype,
            device,
        )
    if not texts:
        raise TunelabError("no texts to classify: pass TEXT arguments or --file")
    if batch_size < 1:
        raise TunelabError(f"--batch-size must be at least 1, got {batch_size}")
    # checked before torch and transformers load (seconds): a mistake is answered at once
    from tunelab.models.precision import check
    from tunelab.runs.marker import read_marker

    check(dtype, device)
    read_marker(run_dir)
    from tunelab.runs.open import open_classifier
    from tunelab.tasks.classification import predict_probs

    model, tok, marker = open_classifier(run_dir, dtype=dtype, device=device)
    probs = predict_probs(model, tok, texts, marker.context_length, batch_size, progress=not quiet)
    labels = marker.labels or []
    out = []
    for text, p in zip(texts, probs.tolist(), strict=True):
        best = max(range(len(labels)), key=p.__getitem__)
        out.append(
            {
                "text": text,
                "label": labels[best],
                "score": round(p[best], 6),
                "probs": {lab: round(q, 6) for lab, q in zip(labels, p, strict=True)},
            }
        )
    return out

"""The CLI is parsing only: every verb's --help imports no torch, and every verb has its
function in tunelab.api; the registries list names without importing what they name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunelab.cli import VERBS

PROBE = """
import sys
from tunelab.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("argv", [["--help"], *([v, "--help"] for v in VERBS)], ids=str)
def test_help_imports_no_torch(argv):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: tunelab" in out
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_registries_import_nothing_heavy():
    code = (
        "import sys\n"
        "from tunelab.strategies import STRATEGIES\n"
        "from tunelab.tasks import TASKS\n"
        "from tunelab.config.finetune import build_config\n"
        "import tunelab.api\n"
        "cfg = build_config(overrides={'strategy': 'lora', 'lora.r': '4'})\n"
        "assert cfg.strategy_options['r'] == 4\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_verb_has_an_api_function():
    from tunelab import api

    for name in (
        "finetune",
        "pretrain",
        "evaluate_run",
        "evaluate_generative",
        "predict",
        "generate",
        "stream",
        "score",
        "compare",
        "compare_decoding",
        "serve",
        "list_models",
        "convert_model",
        "inspect_data",
        "sweep",
    ):
        fn = getattr(api, name)
        assert callable(fn) and fn.__doc__, name
    assert set(api.__all__) <= set(dir(api))

"""The pieces of many-process training that need no second process: the per-rank shard of a
global batch, the step plan, refusals, the FSDP skeleton, checkpoints of another world size,
and the --nproc launcher's command and failure line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.training import distributed, sharding
from tunelab.training.loop import plan_steps
from tunelab.training.options import TrainOptions


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_a_full_global_batch_is_split_in_order_without_overlap(world):
    batch = list(range(100, 100 + 4 * world))
    parts = [distributed.shard(batch, r, world) for r in range(world)]
    assert sum(parts, []) == batch  # rank r takes the r-th slice: the 1-process order
    assert {len(p) for p in parts} == {4}


def test_a_short_global_batch_leaves_no_rank_empty():
    parts = [distributed.shard([7, 8, 9], r, 4) for r in range(4)]
    assert all(len(p) == 1 for p in parts)
    assert {i for p in parts for i in p} == {7, 8, 9}
    parts = [distributed.shard([1, 2, 3, 4, 5], r, 2) for r in range(2)]
    assert parts == [[1, 2, 3], [4, 5, 1]]  # padded round-robin, as DistributedSampler does


def test_two_processes_plan_the_steps_of_one_with_twice_the_batch():
    cfg = TrainOptions(batch_size=4, epochs=2, min_steps=0)
    double = TrainOptions(batch_size=8, epochs=2, min_steps=0)
    assert plan_steps(90, cfg, world=2) == plan_steps(90, double, world=1) == (12, 24)
    assert plan_steps(90, cfg) == plan_steps(90, cfg, world=1)  # no torchrun: one process


@pytest.mark.parametrize(
    ("strategy", "mode", "view", "refused"),
    [
        ("gradual", "ddp", False, True),
        ("features", "ddp", True, True),
        ("adalora", "fsdp", False, True),
        ("adalora", "ddp", False, False),
        ("lora", "fsdp", False, False),
        ("full", "ddp", False, False),
    ],
)
def test_what_cannot_run_on_many_processes_is_refused_in_one_line(strategy, mode, view, refused):
    if not refused:
        distributed.refuse(strategy, mode, view, world=2)
        return
    with pytest.raises(TunelabError, match=f"strategy {strategy} cannot run") as exc:
        distributed.refuse(strategy, mode, view, "--nproc", world=2)
    assert "\n" not in str(exc.value) and "--nproc" in str(exc.value)
    distributed.refuse(strategy, mode, view, world=1)  # one process: everything runs


def test_outside_torchrun_there_is_no_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.context("fsdp") is None
    assert distributed.is_main() and distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.mean(2.5) == 2.5
    assert distributed.on_main(lambda: 3) == 3


def test_on_main_turns_a_user_error_into_a_tunelab_error():
    def bad():
        raise TunelabError("run folder exists: pick another --run.name")

    with pytest.raises(TunelabError, match="pick another"):
        distributed.on_main(bad)


def test_the_fsdp_skeleton_costs_no_memory_and_refills_with_tied_weights():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    skeleton = sharding._skeleton(model)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert len(sharding._blocks(model)) == 2  # the decoder layers, not the embeddings
    full = {k: v.clone() for k, v in model.state_dict().items()}
    plain = sharding.materialize(skeleton, full).eval()
    assert plain.lm_head.weight is plain.model.embed_tokens.weight  # still tied
    ids = torch.tensor([[1, 5, 7, 9]])
    torch.testing.assert_close(plain(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_checkpoint_of_two_processes_is_not_resumed_in_one(tmp_path):
    from tunelab.training.checkpoint import load_checkpoint

    (tmp_path / "state.json").write_text(
        json.dumps({"step": 2, "epoch": 0, "batch": 2, "world": 2})
    )
    with pytest.raises(TunelabError, match="--nproc 2"):
        load_checkpoint(tmp_path, torch.nn.Linear(2, 2), None, None)


def _namespace(**values) -> argparse.Namespace:
    return argparse.Namespace(verb="finetune", **values)


def test_nproc_relaunches_the_same_command_under_torchrun():
    from tunelab.cli.finetune import torchrun_command

    a = _namespace(config="job.yaml", nproc=2, strategy="lora", **{"train.lr": "1e-3"})
    cmd = torchrun_command("finetune", a, 2)
    assert cmd[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
    ]
    rest = ["finetune", "job.yaml", "--strategy", "lora", "--train.lr", "1e-3"]
    assert cmd[5:] == ["-m", "tunelab.cli", *rest]


def test_a_failed_rank_ends_as_one_line_naming_resume(monkeypatch):
    from tunelab.cli.finetune import relaunch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, env: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(TunelabError, match="rerun the same command with --resume"):
        relaunch("finetune", _namespace(nproc=2))

    def rank0_refuses(cmd, env):  # what cli.main does on a rank for a TunelabError
        (Path(env["TUNELAB_RANK_ERRORS"]) / "rank1").write_text("unknown --strategy 'x'")
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(subprocess, "run", rank0_refuses)
    with pytest.raises(TunelabError) as exc:
        relaunch("finetune", _namespace(nproc=2))
    assert str(exc.value) == "the 2-process run stopped on the error above: unknown --strategy 'x'"
    assert relaunch("finetune", _namespace(nproc=1)) is False  # one process: in this one
    with pytest.raises(TunelabError, match="--nproc must be at least 1"):
        relaunch("finetune", _namespace(nproc=0))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TunelabError, match="drop it when running under torchrun"):
        relaunch("finetune", _namespace(nproc=2))


def test_nproc_refuses_a_strategy_before_starting_any_process(monkeypatch, capsys):
    from tunelab.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    started = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: started.append(cmd))
    assert main(["finetune", "--strategy", "gradual", "--nproc", "2"]) == 2
    assert "strategy gradual cannot run on many processes (--nproc)" in capsys.readouterr().err
    assert not started

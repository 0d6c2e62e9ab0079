"""The loss mask of multi-turn chats and instruction data (tunelab.tasks.chat through
causal_lm.encode_pair): labels on EVERY assistant turn and on nothing else."""

from __future__ import annotations

import pytest

from tests.conftest import build_tokenizer
from tunelab.data.chat import alpaca_pair, messages_pair, sharegpt_pair
from tunelab.errors import TunelabError
from tunelab.tasks.causal_lm import IGNORE, encode_pair, prompt_text
from tunelab.tasks.chat import segments

# the tiny vocabulary's words; "news" opens the assistant's turn, "report" a user's, "said" a
# system one, and [SEP] (the tokenizer's EOS) ends every turn
TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}news {% elif m['role'] == 'user' %}report "
    "{% else %}said {% endif %}{{ m['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}news {% endif %}"
)
CONVO = [
    {"role": "system", "content": "the"},
    {"role": "user", "content": "match goal"},
    {"role": "assistant", "content": "team coach"},
    {"role": "user", "content": "market"},
    {"role": "assistant", "content": "bank"},
    {"role": "user", "content": "phone app"},
    {"role": "assistant", "content": "software chip data"},
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    t = build_tokenizer(tmp_path_factory.mktemp("chat-tok"))
    t.chat_template = TEMPLATE
    return t


def _trained_runs(item: dict) -> list[list[int]]:
    """The maximal runs of positions with a label, as their token ids."""
    runs: list[list[int]] = []
    previous = IGNORE
    for token, label in zip(item["input_ids"], item["labels"], strict=True):
        if label != IGNORE:
            assert label == token  # a label is the token at its own position
            if previous == IGNORE:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return runs


def _pair(turns=CONVO) -> dict:
    return messages_pair({"messages": turns}, "test row 1")


def test_template_labels_cover_every_assistant_turn_and_nothing_else(chat_tok):
    item = encode_pair(_pair(), chat_tok, 128)
    runs = [chat_tok.decode(run) for run in _trained_runs(item)]
    assert runs == ["team coach [SEP]", "bank [SEP]", "software chip data [SEP]"]
    # everything else is masked: the system and user turns and the role headers
    masked = [t for t, lab in zip(item["input_ids"], item["labels"], strict=True) if lab == IGNORE]
    assert " ".join(chat_tok.decode(masked).split()) == (
        "said the [SEP] report match goal [SEP] news report market [SEP] news "
        "report phone app [SEP] news"
    )
    # the ids are exactly the template's rendering of the whole conversation
    rendered = chat_tok.apply_chat_template(CONVO, tokenize=False)
    assert chat_tok.decode(item["input_ids"]).split() == rendered.split()


def test_sharegpt_and_messages_give_the_same_mask(chat_tok):
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    convo = [{"from": names[t["role"]], "value": t["content"]} for t in CONVO]
    shared = encode_pair(sharegpt_pair({"conversations": convo}, "row 1"), chat_tok, 128)
    assert shared == encode_pair(_pair(), chat_tok, 128)


def test_only_the_last_turn_trains_without_all_turns(chat_tok):
    item = encode_pair(_pair(), chat_tok, 128, all_turns=False)
    assert [chat_tok.decode(r) for r in _trained_runs(item)] == ["software chip data [SEP]"]
    # the same tokens either way: only the mask differs
    assert item["input_ids"] == encode_pair(_pair(), chat_tok, 128)["input_ids"]


def test_an_assistant_turn_with_weight_0_is_context(chat_tok):
    turns = [dict(t) for t in CONVO]
    turns[4]["weight"] = 0
    runs = _trained_runs(encode_pair(_pair(turns), chat_tok, 128))
    assert [chat_tok.decode(r) for r in runs] == ["team coach [SEP]", "software chip data [SEP]"]


def test_plain_layout_trains_every_assistant_turn_too(tok):
    item = encode_pair(_pair(), tok, 128, chat_template=False)
    runs = [tok.decode(r) for r in _trained_runs(item)]
    assert runs == ["team coach", "bank", "software chip data [SEP]"]  # EOS ends the response
    assert item["input_ids"][0] == tok.bos_token_id or tok.bos_token_id is None


def test_truncation_cuts_earlier_turns_from_the_left_and_keeps_the_response(chat_tok):
    item = encode_pair(_pair(), chat_tok, 12)
    assert len(item["input_ids"]) == 12
    runs = [chat_tok.decode(r) for r in _trained_runs(item)]
    assert runs[-1] == "software chip data [SEP]" and "team coach [SEP]" not in runs


def test_prompt_text_is_unchanged_by_all_turns(chat_tok):
    pair = _pair()
    n = len(chat_tok(prompt_text(pair, chat_tok), add_special_tokens=False)["input_ids"])
    item = encode_pair(pair, chat_tok, 128)
    assert item["labels"][n:] == item["input_ids"][n:]  # the response, all of it trained
    assert chat_tok.decode(item["input_ids"][n:]) == "software chip data [SEP]"


def test_alpaca_in_a_chat_template_and_in_the_alpaca_template(tok, chat_tok):
    pair = alpaca_pair({"instruction": "match", "input": "goal team", "output": "win"}, "row 1")
    item = encode_pair(pair, chat_tok, 64)
    shown = " ".join(chat_tok.decode(item["input_ids"]).split())
    assert shown == "report match goal team [SEP] news win [SEP]"
    assert [chat_tok.decode(r) for r in _trained_runs(item)] == ["win [SEP]"]
    plain = prompt_text(pair, tok, chat_template=False)
    assert plain.startswith("Below is an instruction that describes a task, paired with an input")
    assert plain.endswith("### Instruction:\nmatch\n\n### Input:\ngoal team\n\n### Response:\n")
    no_input = alpaca_pair({"instruction": "match", "output": "win"}, "row 1")
    text = prompt_text(no_input, tok, chat_template=False)
    assert "### Input:" not in text and "paired with an input" not in text
    labels = encode_pair(pair, tok, 256, chat_template=False)["labels"]
    assert tok.decode([t for t in labels if t != IGNORE]) == "win [SEP]"


def test_a_template_that_rewrites_earlier_turns_is_one_line_error(chat_tok, tmp_path):
    t = build_tokenizer(tmp_path)
    # shows only the LAST assistant turn's content (as templates that strip earlier reasoning
    # do): an earlier turn renders differently once more turns follow it
    t.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}news "
        "{% if loop.last %}{{ m['content'] }}{% else %}said{% endif %} [SEP] "
        "{% else %}{{ m['content'] }} [SEP] {% endif %}{% endfor %}"
        "{% if add_generation_prompt %}news {% endif %}"
    )
    with pytest.raises(TunelabError, match="--data.train_all_turns false or --data.chat_template"):
        encode_pair(_pair(), t, 128)
    encode_pair(_pair(), t, 128, all_turns=False)  # the last turn alone is consistent


def test_segments_end_with_the_response(chat_tok, tok):
    for tokenizer in (chat_tok, tok):
        pieces = segments(_pair(), tokenizer)
        assert pieces[-1][1] and pieces[-1][0].startswith("software chip data")
        assert all(trains != pieces[i + 1][1] for i, (_, trains) in enumerate(pieces[:-1]))

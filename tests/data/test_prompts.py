import pytest

from adaptrec.data.prompts import ANSWERS, TEMPLATES, instruction, render_input, render_prompt, truncate_history
from adaptrec.data.records import Case, HistoryItem
from adaptrec.errors import ConfigError, DataFormatError


class WhitespaceTokenizer:
    """Stand-in tokenizer: one token per whitespace-separated word; counts encode calls."""

    def __init__(self):
        self.calls = 0

    def encode(self, text, add_special_tokens=True):
        self.calls += 1
        return text.split()


def make_case(n_history=3, liked=(True, False, True)):
    history = tuple(HistoryItem(text=f'"Item {i}"', liked=liked[i % len(liked)]) for i in range(n_history))
    return Case(user_id="u1", domain="movie", noun="movie", history=history, target='"Target (1999)"', label=1)


def test_instruction_is_tallrecs():
    assert instruction("book") == (
        "Given the user's preference and unpreference, identify whether the user will like the target book "
        'by answering "Yes." or "No.".'
    )
    assert ANSWERS == {1: "Yes.", 0: "No."}
    assert TEMPLATES == ("tallrec", "chat", "tallrec-stats", "chat-stats", "tallrec-items", "chat-items")


def test_render_input_keeps_history_order_and_empty_lines():
    case = make_case()
    assert render_input(case) == (
        'User Preference: "Item 0", "Item 2"\nUser Unpreference: "Item 1"\n'
        'Whether the user will like the target movie "Target (1999)"?'
    )
    empty = make_case(n_history=2, liked=(True,))
    assert render_input(empty).split("\n")[1] == "User Unpreference: "


def test_stats_templates_state_the_like_ratio_of_the_shown_history():
    case = make_case(n_history=3)  # liked, disliked, liked
    lines = render_prompt(case, "tallrec-stats").split("\n")
    assert lines[lines.index('User Unpreference: "Item 1"') + 1] == "User Statistics: liked 2 of the 3 items above (67%)"
    assert render_prompt(case, "tallrec-stats").replace("User Statistics: liked 2 of the 3 items above (67%)\n", "") \
        == render_prompt(case)
    assert "User Statistics: no history" in render_input(make_case(n_history=0), stats=True)
    tok = WhitespaceTokenizer()
    cut = truncate_history(make_case(n_history=6, liked=(False, True)), "tallrec-stats", tok, max_tokens=80)
    assert 0 < len(cut.history) < 6  # truncation counts the statistics line, which then describes what is left
    shown = render_prompt(cut, "tallrec-stats")
    n_liked = sum(h.liked for h in cut.history)
    assert f"liked {n_liked} of the {len(cut.history)} items above" in shown


def test_tallrec_template_is_upstream_byte_for_byte():
    # upstream evaluate.py generate_prompt, including the "  # noqa: E501" its f-string leaks
    expected = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.  # noqa: E501\n\n"
        "### Instruction:\n" + instruction("movie") + "\n\n### Input:\n" + render_input(make_case())
        + "\n\n### Response:\n"
    )
    assert render_prompt(make_case()) == expected


def test_chat_template_uses_tokenizer():
    seen = {}

    class ChatTok(WhitespaceTokenizer):
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            seen.update(messages=messages, add_generation_prompt=add_generation_prompt, tokenize=tokenize)
            return "<user>" + messages[0]["content"] + "<assistant>"

    out = render_prompt(make_case(), "chat", ChatTok())
    assert seen["messages"] == [{"role": "user", "content": instruction("movie") + "\n\n" + render_input(make_case())}]
    assert seen["add_generation_prompt"] is True and seen["tokenize"] is False
    assert out.startswith("<user>Given") and out.endswith("<assistant>")
    with pytest.raises(ConfigError):
        render_prompt(make_case(), "chat")
    with pytest.raises(ConfigError, match="tallrec, chat"):
        render_prompt(make_case(), "alpaca")


def test_truncation_drops_oldest_minimally_with_binary_search():
    case = make_case(n_history=64)
    tok = WhitespaceTokenizer()
    full = len(tok.encode(render_prompt(case)))
    budget = full - 9  # each item is 2 words + a comma-joined word boundary: needs several drops
    tok.calls = 0
    fitted = truncate_history(case, "tallrec", tok, budget)
    assert tok.calls <= 2 + 7  # full, empty, then log2(64) probes: a linear loop would need more
    dropped = len(case.history) - len(fitted.history)
    assert dropped > 0 and fitted.history == case.history[dropped:]  # oldest dropped, order kept
    assert fitted.target == case.target
    assert len(tok.encode(render_prompt(fitted))) <= budget
    one_less = Case(**{**fitted.__dict__, "history": case.history[dropped - 1:]})
    assert len(tok.encode(render_prompt(one_less))) > budget  # minimal number dropped
    assert render_prompt(case, tokenizer=tok, max_tokens=budget) == render_prompt(fitted)
    assert render_prompt(case, tokenizer=tok, max_tokens=full) == render_prompt(case)


def test_a_tallrec_style_history_is_cut_from_both_lists_keeping_its_like_share():
    """TALLRec lists every liked item before every disliked one and does not record when: cutting the oldest
    items would cut only likes, and move the like-ratio the prompt states."""
    from adaptrec.data.records import LIKED_FIRST

    liked = [HistoryItem(f'"L{i}"', True) for i in range(12)]
    disliked = [HistoryItem(f'"D{i}"', False) for i in range(4)]
    case = Case("u1", "movie", "movie", tuple(liked + disliked), '"T"', 1, meta={LIKED_FIRST: True})
    cut = case.without_oldest(8)
    assert cut.history == tuple(liked[6:] + disliked[2:]) and cut.like_ratio == case.like_ratio
    assert case.without_oldest(16).history == () and case.without_oldest(0) == case
    plain = Case("u1", "movie", "movie", tuple(liked + disliked), '"T"', 1)  # time-ordered: the oldest go
    assert plain.without_oldest(8).history == tuple(liked[8:] + disliked)
    tok = WhitespaceTokenizer()
    budget = len(tok.encode(render_prompt(case))) - 9
    fitted = truncate_history(case, "tallrec", tok, budget)
    assert 0 < len(fitted.history) < 16 and abs(fitted.like_ratio - case.like_ratio) <= 0.1


def test_truncation_fails_clearly_when_nothing_fits():
    with pytest.raises(DataFormatError, match="'u1'.*the 5-token prompt"):
        render_prompt(make_case(), tokenizer=WhitespaceTokenizer(), max_tokens=5)


def test_a_chat_prompt_is_counted_as_scored_without_a_second_bos():
    """A tokenizer that adds a BOS adds none to a chat prompt (its template wrote one): a prompt that fits as scored
    keeps its whole history, and a tallrec prompt counts the BOS it is scored with."""
    class BosChatTokenizer(WhitespaceTokenizer):
        chat_template = "stand-in"

        def encode(self, text, add_special_tokens=True):
            return ["<s>"] * add_special_tokens + text.split()

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            return "<s> " + messages[0]["content"] + " assistant:\n"

    tok, case = BosChatTokenizer(), make_case(n_history=8)
    chat = render_prompt(case, "chat", tok)
    assert render_prompt(case, "chat", tok, max_tokens=len(chat.split())) == chat
    tallrec = render_prompt(case, "tallrec", tok)
    assert render_prompt(case, "tallrec", tok, max_tokens=len(tallrec.split())) != tallrec


def test_real_tokenizer_chat_template_and_truncation(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    case = make_case(n_history=30)
    chat = render_prompt(case, "chat", tok)
    assert instruction("movie") + "\n\n" + render_input(case) in chat
    budget = len(tok.encode(chat)) - 20
    short = render_prompt(case, "chat", tok, max_tokens=budget)
    assert len(tok.encode(short)) <= budget
    assert '"Item 0"' not in short and '"Item 29"' in short and short.endswith(chat[chat.index("?") + 1:])


def test_shared_history_gives_every_candidate_the_history_that_fits_the_longest():
    from dataclasses import replace

    from adaptrec.data.prompts import shared_history

    tok = WhitespaceTokenizer()
    history = tuple(HistoryItem(f'"Item number {i}"', liked=i % 2 == 0) for i in range(30))
    short = Case("u", "movie", "movie", history, '"A"')
    long = replace(short, target='"' + "A very long candidate title " * 6 + '"')
    budget = len(tok.encode(render_prompt(short))) - 40
    cut = shared_history([short, long], "tallrec", tok, budget)
    assert cut[0].history == cut[1].history and 0 < len(cut[0].history) < len(history)
    assert cut[0].history == history[-len(cut[0].history):]  # the newest items stay
    assert all(len(tok.encode(render_prompt(c))) <= budget for c in cut)
    # on their own, the short candidate would keep more history than the long one
    alone = [render_prompt(c, "tallrec", tok, budget) for c in (short, long)]
    assert alone[0].count("Item number") > alone[1].count("Item number")
    assert shared_history([short], "tallrec", tok, None) == [short]
    # a candidate that cannot fit even alone gets no history; the others keep theirs
    huge = replace(short, target='"' + "word " * budget + '"')
    cut = shared_history([short, huge], "tallrec", tok, budget)
    assert cut[1].history == () and len(cut[0].history) > 0


def test_the_chat_template_on_a_tokenizer_without_one_is_one_line(tiny_model_dir):
    """(was: transformers' ValueError traceback; the Gemma-3 GGUF has no chat template)"""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="'chat' needs a tokenizer with a chat template, and this backbone's has"):
        render_prompt(make_case(), "chat", tokenizer)

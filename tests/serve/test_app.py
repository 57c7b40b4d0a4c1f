"""The HTTP server through a real uvicorn process with the tiny model: endpoints, admin, errors, shutdown."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from router_helpers import device_atol, fresh_backbone
from serve_helpers import candidates, user_case
from serve_server import TOKEN, Server

from adaptrec.scoring.variants import component_scores


@pytest.fixture(scope="module")
def server(tiny_model_dir, home):
    srv = Server(tiny_model_dir, home, "--max-candidates", "8", "--max-prompt-tokens", "300")
    yield srv
    srv.stop()


def scrape(server) -> dict[tuple[str, tuple], float]:
    """/metrics parsed by prometheus_client's own parser (it raises on an invalid scrape): {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = server.request("GET", "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _received(server, route: str) -> float:
    """The requests to `route` the server has received: answered, or in progress."""
    samples = scrape(server)
    answered = sum(v for (name, labels), v in samples.items()
                   if name == "adaptrec_requests_total" and ("route", route) in labels)
    return answered + samples.get(("adaptrec_requests_in_progress", (("route", route),)), 0)


def _body(case, **extra) -> dict:
    history = [{"text": h.text, "liked": h.liked, "domain": h.domain} for h in case.history]
    return {"user_id": case.user_id, "domain": case.domain, "noun": case.noun, "history": history, **extra}


def test_score_and_recommend_agree_with_the_plain_scorer(tiny_model_dir, home, server):
    from adaptrec.registry import Registry

    user = user_case(5)
    cands = candidates(user, 6)
    targets = [c.target for c in cands]
    plain = component_scores(fresh_backbone(tiny_model_dir), Registry(home), ["arts-lora", "office-lora"], cands,
                             progress=False)
    status, routed = server.request("POST", "/v1/score", _body(user, items=targets))
    assert status == 200 and routed["adapters"] == ["arts-lora:1"] and "arts" in routed["reason"]
    np.testing.assert_allclose(routed["scores"], plain[0], atol=device_atol(1e-4))
    status, other = server.request("POST", "/v1/score", _body(user, items=targets, adapter="office-lora"))
    np.testing.assert_allclose(other["scores"], plain[1], atol=device_atol(1e-4))
    assert other["adapters"] == ["office-lora:1"]  # the version that answered (was: the name as requested)
    status, rec = server.request("POST", "/v1/recommend", _body(user, candidates=targets, k=3))
    assert status == 200 and len(rec["items"]) == 3
    top = [targets.index(r["item"]) for r in rec["items"]]
    scores = [r["score"] for r in rec["items"]]
    np.testing.assert_allclose(scores, plain[0][top], atol=device_atol(1e-4))
    assert scores == sorted(scores, reverse=True)
    # the best three of the reference (near-ties may swap under bf16 on CUDA)
    assert plain[0][top].min() >= np.delete(plain[0], top).max() - device_atol(0)


def test_adapters_health_metrics_and_openapi(server):
    server.request("POST", "/v1/score", _body(user_case(2), items=['"x"']))
    status, adapters = server.request("GET", "/v1/adapters")
    assert status == 200 and "arts-lora:1" in [r["ref"] for r in adapters["resident"]]
    assert set(adapters["registered"]) >= {"arts-lora:1", "office-lora:1", "ada:1", "pre:1"}
    assert server.request("GET", "/healthz") == (200, {"status": "ok", "resident": len(adapters["resident"])})
    samples = scrape(server)
    assert samples[("adaptrec_requests_total", (("method", "POST"), ("route", "/v1/score"), ("status", "200")))] >= 1
    assert samples[("adaptrec_request_seconds_count", (("route", "/v1/score"),))] >= 1
    assert samples[("adaptrec_batch_rows_count", ())] >= 1
    assert samples[("adaptrec_adapters_resident", ())] == len(adapters["resident"])
    assert samples[("adaptrec_requests_in_progress", (("route", "/metrics"),))] == 1  # the scrape itself
    assert samples[("adaptrec_requests_in_progress", (("route", "/v1/score"),))] == 0
    status, schema = server.request("GET", "/openapi.json")
    assert {"/v1/score", "/v1/recommend", "/v1/adapters/load"} <= set(schema["paths"])
    # every answer has its schema, and each route lists the errors it gives (was: the adapter routes' bodies empty,
    # /v1/adapters without its 503, a 401 listed for routes that never ask for a token)
    ops = {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()}
    for path in ("/v1/score", "/v1/recommend", "/v1/adapters", "/v1/adapters/load", "/v1/adapters/unload"):
        op = next(op for (p, _), op in ops.items() if p == path)
        assert op["responses"]["200"]["content"]["application/json"]["schema"], path
    assert "503" in ops[("/v1/adapters", "get")]["responses"] and "401" not in ops[("/v1/score", "post")]["responses"]
    assert "401" in ops[("/v1/adapters/load", "post")]["responses"]


def test_admin_needs_the_bearer_token(server):
    for token in (None, "wrong"):
        status, body = server.request("POST", "/v1/adapters/load", {"ref": "ada"}, token=token)
        assert status == 401 and "Bearer" in body["error"]["message"]
    assert "ada:1" not in [r["ref"] for r in server.request("GET", "/v1/adapters")[1]["resident"]]
    status, body = server.request("POST", "/v1/adapters/load", {"ref": "ada"}, token=TOKEN)
    assert status == 200 and body["loaded"]["ref"] == "ada:1"
    assert server.request("POST", "/v1/adapters/unload", {"ref": "ada"}, token=TOKEN)[0] == 200
    status, body = server.request("POST", "/v1/adapters/unload", {"ref": "ada"}, token=TOKEN)
    assert status == 404 and "not loaded" in body["error"]["message"]


@pytest.mark.parametrize("body, raw, status, words", [
    (None, b"{not json", 422, "malformed"),
    ({"domain": "arts"}, None, 422, "items"),
    ({"domain": "arts", "items": ['"x"'] * 9}, None, 413, "9 candidates"),
    ({"domain": "arts", "items": ['"x"'], "history": [{"text": f'"Item {i}"'} for i in range(60)]}, None, 413, "tokens"),
    ({"domain": "arts", "items": ['"x"'], "adapter": "missing"}, None, 404, "missing"),
    ({"domain": "garden", "items": ['"x"']}, None, 404, "no adapter is promoted"),
])
def test_bad_requests_get_json_4xx_and_the_server_keeps_serving(server, body, raw, status, words):
    got, payload = server.request("POST", "/v1/score", body, raw=raw)
    assert got == status and words in payload["error"]["message"]
    assert server.request("POST", "/v1/score", _body(user_case(2), items=['"x"']))[0] == 200


def test_graceful_shutdown_finishes_accepted_requests(tiny_model_dir, home):
    srv = Server(tiny_model_dir, home, "--max-wait-ms", "800")  # requests sit in the batching window
    results: list[int] = []

    def call(i: int) -> None:
        results.append(srv.request("POST", "/v1/score", _body(user_case(2 + i), items=['"x"', '"y"']))[0])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while _received(srv, "/v1/score") < 6:  # every request in (was: a 0.3 s sleep, short on a loaded machine)
        assert time.monotonic() < deadline, "the server never received the six requests"
        time.sleep(0.02)
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    out = srv.stop()
    assert results == [200] * 6, out
    assert "Application shutdown complete" in out  # uvicorn then re-raises SIGTERM: exit status -15
    assert srv.proc.returncode in (0, -signal.SIGTERM)


def test_a_request_naming_a_missing_adapter_never_fails_a_good_one_beside_it(tiny_model_dir, home):
    srv = Server(tiny_model_dir, home, "--max-batch", "16", "--max-wait-ms", "300")  # merging allowed and likely
    try:
        results: dict[str, tuple] = {}
        good, bad = _body(user_case(3), items=['"x"']), _body(user_case(3), items=['"y"'], adapter="missing")
        threads = [threading.Thread(target=lambda k=k, b=b: results.__setitem__(k, srv.request("POST", "/v1/score", b)))
                   for k, b in (("good", good), ("bad", bad))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        srv.stop()
    assert results["good"][0] == 200 and len(results["good"][1]["scores"]) == 1
    assert results["bad"][0] == 404 and "missing" in results["bad"][1]["error"]["message"]


def test_an_oversized_body_is_refused_from_its_header_before_it_arrives(server):
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 21800000\r\n\r\n" + b"{" * 1000)  # 21.8 MB announced, 1 KB sent
        reply = sock.recv(65536)  # a server waiting for the body would time this socket out instead
        while not reply.rstrip().endswith(b"}"):  # the body may come in a second packet
            reply += sock.recv(65536)
        head = reply.decode(errors="replace")
    assert head.startswith("HTTP/1.1 413") and '"LimitExceeded"' in head
    assert server.request("GET", "/healthz")[0] == 200

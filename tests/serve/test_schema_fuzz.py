"""Schemathesis against the server's own OpenAPI schema (a real uvicorn process, tiny model): no 5xx, and every
answer matches the schema, its documented statuses and content types."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from serve_helpers import make_registry
from serve_server import TOKEN, Server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
EXAMPLES = 15  # per operation: about 10 s in all


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz-home")
    make_registry(tiny_model_dir, home)
    srv = Server(tiny_model_dir, home, "--max-candidates", "8", "--max-history", "20", "--max-text-chars", "300",
                 "--max-prompt-tokens", "400")
    yield srv
    srv.stop()


def test_every_operation_answers_within_its_schema(server):
    """Each operation of the schema, EXAMPLES generated cases (schemathesis strategies run by hypothesis here:
    its pytest plugin does not load under this pytest)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/score", "/v1/recommend", "/v1/adapters/load", "/healthz"}
    for operation in operations:
        headers = {"Authorization": f"Bearer {TOKEN}"} if operation.path.startswith("/v1/adapters/") else None

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS)  # noqa: B023 - run at once

        check()

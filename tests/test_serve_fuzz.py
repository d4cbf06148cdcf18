"""Requests generated from the server's own OpenAPI schema (schemathesis: valid ones, and ones that
break the schema on purpose) never get a 5xx, and the server is still healthy afterwards."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from serving import API_KEY

pytestmark = pytest.mark.xdist_group("serve")

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 12
"""Per operation and generation mode."""


def _shorten(case) -> None:
    """Long generations only cost time here (a chat without max_tokens may fill the context);
    large values are answered by the limits' own tests."""
    if isinstance(case.body, dict) and case.path.startswith("/v1/"):
        for key in ("max_tokens", "max_completion_tokens"):
            value = case.body.get(key)
            if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 8):
                case.body[key] = 8


def test_generated_requests_never_get_a_server_error(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/tokenize"}
    seen = []

    for op in operations:
        for mode in GenerationMode:

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case):
                _shorten(case)
                response = case.call(headers=AUTH, timeout=60)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
                )

            try:
                check()
            except Unsatisfiable:  # nothing in this operation can be made invalid (no body, plain strings)
                assert mode == GenerationMode.NEGATIVE
    assert any(s == 200 for s in seen) and any(400 <= s < 500 for s in seen)
    assert httpx.get(server.url + "/health").status_code == 200
    assert server.proc.poll() is None

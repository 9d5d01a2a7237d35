"""Property-based API test: schemathesis generates requests from /openapi.json; no 5xx, responses match the schema.

Operations are driven with hypothesis directly (schemathesis' pytest fixture loader relies on a pytest private
attribute that pytest 9 removed).
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.api.app import create_app
from tests.serving.conftest import make_state

KEY = "schema-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
OPERATIONS = ["POST /generate", "POST /v1/images/generations", "POST /v1/images/edits", "GET /healthz", "GET /readyz", "GET /v1/endpoints", "GET /",
              "POST /v1/webrtc", "DELETE /v1/webrtc/{session_id}"]


@pytest.fixture(scope="module")
def api_schema(cpu_backend):
    # Small bounds keep each generated generation cheap; the schema advertises exactly these bounds.
    state = make_state(cpu_backend, api_key=KEY, max_image_size=96, max_steps=3, max_images=2, max_prompt_length=200)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(state), headers=AUTH)


def test_schema_lists_every_operation(api_schema):
    found = {f"{r.ok().method.upper()} {r.ok().path}" for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# Negative (schema-violating) data only exists for operations that take schema-described input (the WebRTC offer
# is raw SDP text).
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.startswith("POST") and op != "POST /v1/webrtc"
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_operation_conforms_to_schema(api_schema, label, mode):
    operation = next(r.ok() for r in api_schema.get_all_operations() if f"{r.ok().method.upper()} {r.ok().path}" == label)

    examples = 25 if label.startswith("POST") else 5

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(case):
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    check()

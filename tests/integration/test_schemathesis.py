"""The OpenAPI contract, fuzzed by schemathesis against the running service (issue #5).

The schema is loaded from the service itself (``/schema/openapi.json``). Every operation is called
with schemathesis' positive *and* negative examples — a bounded number per operation and mode,
derandomized so every run sends the same requests — and every response goes through all of
schemathesis' built-in checks (not a server error; status code, content type, headers and body
conforming to the schema; negative data rejected; positive data accepted; ...).

Two tests per operation, listed below (``test_the_list_covers_every_operation`` fails when the
schema gains or loses one, so nothing is skipped silently):

* ``test_no_server_error``: the ``not_a_server_error`` check alone — must hold everywhere;
* ``test_all_checks``: every built-in check, so the schema must describe what the API really
  answers (statuses, problem+json errors, security, bodies).

(schemathesis' ``pytest.from_fixture`` cannot load the schema from the running service here: with
pytest 9 it fails on ``Function._nodeid``; so cases come from its Python API, ``as_strategy``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode

from tests.support.service import Bulkio, make_token

pytestmark = pytest.mark.integration

#: Examples per operation and generation mode.
MAX_EXAMPLES = 25

OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/v1/imports"),
    ("GET", "/v1/imports/{job_id}"),
    ("GET", "/v1/imports/{job_id}/errors"),
    ("GET", "/v1/imports/{job_id}/errors/page"),
    ("GET", "/v1/imports/{job_id}/errors/summary"),
    ("GET", "/v1/imports/{job_id}/rejected"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/exports"),
    ("POST", "/v1/exports"),
    ("GET", "/v1/exports/{job_id}"),
    ("GET", "/v1/downloads/{job_id}"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{webhook_id}"),
    ("DELETE", "/v1/webhooks/{webhook_id}"),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/attempts"),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"),
    ("POST", "/v1/uploads"),
    ("GET", "/v1/uploads/{upload_id}"),
    ("POST", "/v1/uploads/{upload_id}/complete"),
    ("HEAD", "/v1/uploads/{upload_id}/data"),
    ("PATCH", "/v1/uploads/{upload_id}/data"),
]
#: Checks an operation cannot pass, and why. A webhook URL, or an import's ``source_url``, that
#: the schema allows is still refused (400) unless it resolves to a public address (the SSRF
#: guard), which no schema can say and which no name does on a machine without DNS.
EXCLUDED: dict[tuple[str, str], list[Any]] = {
    ("POST", "/v1/webhooks"): [positive_data_acceptance],
    ("POST", "/v1/imports"): [positive_data_acceptance],
}


class Api:
    def __init__(self, service: Bulkio) -> None:
        self.base = f"http://127.0.0.1:{service.port}"
        # Its own token without a rate limit: hundreds of calls a minute must not become 429s.
        token = make_token(
            service.env["BULKIO_DATABASE_URL"], "schemathesis", ["admin"], requests_per_minute=10**6
        )
        self.headers = {"Authorization": f"Bearer {token}"}
        self.schema = schemathesis.openapi.from_url(f"{self.base}/schema/openapi.json")

    def operations(self) -> list[tuple[str, str]]:
        found = []
        for result in self.schema.get_all_operations():
            assert isinstance(result, Ok), f"the schema has an invalid operation: {result}"
            found.append((result.ok().method.upper(), result.ok().path))
        return sorted(found)

    def has_inputs(self, method: str, path: str) -> bool:
        """Whether a request can be invalid at all: an operation without parameters, body or
        security requirement (``/health``) has no negative examples (hypothesis: Unsatisfiable)."""
        raw = self.schema.raw_schema
        definition = raw["paths"][path][method.lower()]
        security = definition.get("security", raw.get("security", []))
        return bool(definition.get("parameters") or definition.get("requestBody") or security)

    def fuzz(self, method: str, path: str, checks: list[Any] | None = None) -> None:
        """Positive then negative cases (if any); ``checks`` None means all built-in checks."""
        operation = self.schema[path][method]
        modes = [GenerationMode.POSITIVE]
        if self.has_inputs(method, path):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:
                case.call_and_validate(
                    base_url=self.base,
                    headers=self.headers,
                    checks=checks,
                    excluded_checks=EXCLUDED.get((method, path)),
                )

            call()


@pytest.fixture
def api(service: Bulkio) -> Iterator[Api]:
    yield Api(service)


def test_the_list_covers_every_operation(api: Api) -> None:
    assert api.operations() == sorted(OPERATIONS)


IDS = [f"{m} {p}" for m, p in OPERATIONS]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=IDS)
def test_no_server_error(api: Api, method: str, path: str) -> None:
    api.fuzz(method, path, checks=[not_a_server_error])


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=IDS)
def test_all_checks(api: Api, method: str, path: str) -> None:
    api.fuzz(method, path)

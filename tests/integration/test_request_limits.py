"""Limits on single requests over real HTTP: body sizes per route, the per-token request rate with
its RateLimit-* headers, and what the rate limiter does while Redis is down (fails open, logged
and counted)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.servers import RedisServer
from tests.support.service import TEST_ENV, Bulkio, make_token
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

NO_JOB = "/v1/jobs/00000000-0000-4000-8000-000000000000"


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def assert_too_large(res: httpx.Response, limit: int) -> None:
    assert res.status_code == 413, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert (
        res.json()["detail"]
        == f"the request body is larger than this route accepts ({limit} bytes)"
    )


# ---------------------------------------------------------------- body sizes


def test_json_bodies_are_bounded(service: Bulkio) -> None:
    big = {"resource": "users", "filters": {"ids": ids(30_000)}}  # ~1.2 MB of JSON
    assert_too_large(service.client.post("/v1/exports", json=big), 1024 * 1024)
    fits = {"resource": "users", "filters": {"ids": ids(20_000)}}  # ~0.8 MB
    res = service.client.post("/v1/exports", json=fits)
    assert res.status_code == 202, res.text


def test_a_streamed_body_without_length_is_cut_at_the_limit(service: Bulkio) -> None:
    def endless() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
        yield b'{"resource": "users", "fields": ["'
        for _ in range(1000):
            yield b"x" * 60_000

    res = service.client.post(
        "/v1/exports", content=endless(), headers={"Content-Type": "application/json"}
    )
    assert_too_large(res, 1024 * 1024)


def test_routes_without_a_body_accept_only_a_small_one(service: Bulkio) -> None:
    res = service.client.post(f"{NO_JOB}/cancel", content=b"x" * 100_000)
    assert_too_large(res, 64 * 1024)
    assert service.client.post(f"{NO_JOB}/cancel", content=b"x" * 1000).status_code == 404


def test_uploads_keep_their_own_cap(service: Bulkio) -> None:
    rows = b"".join(
        b"%s,u%d@example.com,U,reader,2024-01-01T00:00:00Z\n" % (str(uuid.UUID(int=i)).encode(), i)
        for i in range(1, 40_001)
    )
    body = b"id,email,name,role,created_at\n" + rows  # ~3 MB: past every JSON limit
    assert len(body) > 2 * 1024 * 1024
    res = service.upload(None, "users", data=body, filename="u.csv")
    assert res.status_code == 202, res.text
    assert res.json()["progress"]["total_bytes"] == len(body)


# ---------------------------------------------------------------- request rate


def in_one_window(run: Callable[[], list[httpx.Response]]) -> list[httpx.Response]:
    """``run()``'s answers, from requests that all fell in one fixed minute (else run again)."""
    for _ in range(3):
        minute = int(time.time() // 60)
        answers = run()
        if int(time.time() // 60) == minute:
            return answers
    raise AssertionError("three runs straddled a minute boundary")


def test_rate_limit_headers_on_every_answer_of_a_limited_route(
    service: Bulkio, database_url: str
) -> None:
    def run() -> list[httpx.Response]:
        token = make_token(database_url, "pia", ["imports:read"], requests_per_minute=3)
        client = service.client_for(token)
        return [client.get(NO_JOB) for _ in range(4)]

    answers = in_one_window(run)
    assert [r.status_code for r in answers] == [404, 404, 404, 429]
    for n, res in enumerate(answers):
        assert res.headers["ratelimit-limit"] == "3"
        assert res.headers["ratelimit-remaining"] == str(max(2 - n, 0))
        assert 1 <= int(res.headers["ratelimit-reset"]) <= 60
    refused = answers[-1]
    assert refused.headers["retry-after"] == refused.headers["ratelimit-reset"]
    assert refused.json()["limit"] == "requests_per_minute"
    # Successful and streamed answers carry them too; unauthenticated ones are not counted.
    ok = service.client.get("/v1/exports", params={"resource": "users"})
    assert ok.status_code == 200 and ok.headers["ratelimit-limit"] == "600"
    assert "ratelimit-limit" not in service.client_for(None).get(NO_JOB).headers
    assert "ratelimit-limit" not in service.client.get("/health").headers


# ---------------------------------------------------------------- Redis down


@pytest.fixture(scope="module")
def own_redis(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Bulkio, RedisServer]]:
    """An API whose Redis this module may stop (the session's workers keep theirs)."""
    work = tmp_path_factory.mktemp("redis-down")
    with RedisServer() as redis:
        env = {
            **TEST_ENV,
            "BULKIO_DATABASE_URL": database_url,
            "BULKIO_REDIS_URL": redis.url(),
            "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
            "BULKIO_METRICS_DIR": str(work / "metrics"),
        }
        service = Bulkio(env, work, workers=0)
        try:
            yield service, redis
        finally:
            service.stop()


def unchecked(service: Bulkio) -> float:
    text = httpx.get(f"http://127.0.0.1:{service.port}/metrics").text
    name = "bulkio_rate_limit_unavailable_total "
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_rate_limiter_fails_open_logged_and_counted_while_redis_is_down(
    own_redis: tuple[Bulkio, RedisServer], database_url: str
) -> None:
    service, redis = own_redis
    client = service.client_for(
        make_token(database_url, "quinn", ["imports:read"], requests_per_minute=2)
    )
    before = unchecked(service)
    redis.stop()
    try:
        answers = [client.get(NO_JOB) for _ in range(5)]
        # Past the limit of 2, yet served: the limiter cannot count, so it lets requests through.
        assert [r.status_code for r in answers] == [404] * 5
        assert all("ratelimit-limit" not in r.headers for r in answers)
        assert unchecked(service) == before + 5
        assert "rate limiter unavailable" in service.logs()
    finally:
        redis.start()

    def limited() -> httpx.Response | None:
        res = client.get(NO_JOB)
        return res if res.status_code == 429 else None

    # Back: counting resumes (after the limiter's pause) and the limit holds again.
    res = wait_until(limited, 60, 0.5, "the limit to hold again")
    assert res.headers["ratelimit-remaining"] == "0" and "retry-after" in res.headers

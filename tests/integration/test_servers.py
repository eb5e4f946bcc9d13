"""The throwaway servers of tests/servers.py really work (and really go away)."""

from __future__ import annotations

import boto3
import httpx
import psycopg
import pytest
import redis

from tests.support.servers import PostgresServer, RedisServer, S3Server

pytestmark = pytest.mark.integration

_seen_databases: list[str] = []


def test_postgres_answers(pg_server: PostgresServer) -> None:
    assert pg_server.url().startswith(f"postgresql://postgres@127.0.0.1:{pg_server.port}/")
    with psycopg.connect(pg_server.url()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        (shared_buffers,) = conn.execute("SHOW shared_buffers").fetchone() or ("",)
        assert shared_buffers == PostgresServer.DEFAULT_SETTINGS["shared_buffers"]
        (listen,) = conn.execute("SHOW listen_addresses").fetchone() or ("",)
        assert listen == "127.0.0.1"
        (version,) = conn.execute("SHOW server_version_num").fetchone() or ("0",)
        assert int(version) >= 150000


@pytest.mark.parametrize("round_", [1, 2])
def test_fresh_database_is_new_empty_and_dropped_afterwards(
    fresh_database: str, pg_server: PostgresServer, round_: int
) -> None:
    name = fresh_database.rsplit("/", 1)[1]
    existing = {row[0] for row in pg_server.execute("select datname from pg_database")}
    assert name in existing
    # The database of the previous round was dropped by the fixture's teardown.
    assert not existing.intersection(_seen_databases)
    _seen_databases.append(name)
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("select current_database()").fetchone() == (name,)
        tables = conn.execute(
            "select count(*) from pg_tables"
            " where schemaname not in ('pg_catalog', 'information_schema')"
        ).fetchone()
        assert tables == (0,)
        conn.execute("create table t (id int primary key)")
        conn.execute("insert into t values (%s)", (round_,))


def test_redis_ping_and_restart(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url())
    try:
        assert client.ping() is True
        client.set("bulkio:test:key", "kept")
    finally:
        client.close()

    redis_server.restart(empty=False)
    client = redis.Redis.from_url(redis_server.url())
    try:
        assert client.get("bulkio:test:key") == b"kept"
    finally:
        client.close()

    port = redis_server.port
    redis_server.restart(empty=True)
    assert redis_server.port == port
    client = redis.Redis.from_url(redis_server.url())
    try:
        assert client.ping() is True
        assert client.get("bulkio:test:key") is None
        # The session's bulkio workers share this Redis and re-register (heartbeats) as soon as
        # it is back, so "empty" is checked on this test's own keys, not on dbsize().
        assert client.keys("bulkio:test:*") == []
    finally:
        client.close()


def test_s3_put_get_and_presigned_url(s3_server: S3Server) -> None:
    s3 = s3_server.client()
    try:
        body = b"id,email\n1,a@example.com\n"
        s3.put_object(Bucket=s3_server.bucket, Key="exports/t.csv", Body=body)
        assert s3.get_object(Bucket=s3_server.bucket, Key="exports/t.csv")["Body"].read() == body
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": s3_server.bucket, "Key": "exports/t.csv"}, ExpiresIn=60
        )
    finally:
        s3.close()
    assert url.startswith(s3_server.endpoint + "/")
    response = httpx.get(url)  # real HTTP to the moto server, signature in the query string
    assert response.status_code == 200
    assert response.content == body

    env = s3_server.env()
    assert env["BULKIO_STORAGE_URL"] == f"s3://{s3_server.bucket}"
    # The same credentials work for a plain boto3 client built from the BULKIO_* settings.
    other = boto3.client(
        "s3",
        endpoint_url=env["BULKIO_S3_ENDPOINT"],
        region_name=env["BULKIO_S3_REGION"],
        aws_access_key_id=env["BULKIO_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["BULKIO_S3_SECRET_ACCESS_KEY"],
    )
    try:
        names = [b["Name"] for b in other.list_buckets()["Buckets"]]
    finally:
        other.close()
    assert s3_server.bucket in names


def test_servers_clean_up_after_themselves() -> None:
    with PostgresServer() as pg, RedisServer() as rd:
        base_dirs = [pg.base_dir, rd.base_dir]
        assert all(d is not None and d.exists() for d in base_dirs)
        assert pg.execute("select 1") == [(1,)]
        assert rd.ping()
        port = rd.port
    assert not any(d is not None and d.exists() for d in base_dirs)
    assert not rd.ping()
    assert rd.port == port

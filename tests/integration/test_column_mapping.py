"""``mapping`` and ``header_case`` (issue #12): file columns and keys → fields, on a table that
holds rows. Errors name the file's own columns; a bad mapping is refused when the request comes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.support.service import Bulkio

pytestmark = pytest.mark.integration

T0 = dt.datetime(2021, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
CREATED = "2023-04-05T06:07:08Z"
CREATED_AT = dt.datetime(2023, 4, 5, 6, 7, 8, tzinfo=dt.UTC)
ROWS = 2200  # with BULKIO_BATCH_ROWS=1000: three batches, so a resumed batch reads the mapping
MAPPING = {"User ID": "id", "Email Address": "email", "Full Name": "name", "Since": "created_at"}


def uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"user-{n}"))


def seed(db: psycopg.Connection[Any], n: int) -> None:
    with (
        db.cursor() as cur,
        cur.copy("COPY users (id, email, name, role, created_at) FROM STDIN") as copy,
    ):
        for i in range(n):
            copy.write_row((uid(i), f"u{i}@example.com", f"N{i}", "editor", T0))


def post(service: Bulkio, data: bytes, name: str, **form: Any) -> Any:
    fields = {"resource": "users", **{k: v if isinstance(v, str) else json.dumps(v)
                                      for k, v in form.items()}}  # fmt: skip
    return service.client.post("/v1/imports", data=fields, files={"file": (name, data)})


def run(service: Bulkio, data: bytes, name: str, **form: Any) -> dict[str, Any]:
    res = post(service, data, name, **form)
    assert res.status_code == 202, res.text
    return service.wait(res.json()["job_id"])


def report(service: Bulkio, job_id: str) -> list[dict[str, Any]]:
    res = service.error_report(job_id)
    assert res.status_code == 200, res.text
    return [json.loads(line) for line in res.text.splitlines()]


def names(db: psycopg.Connection[Any]) -> dict[str, tuple[str, str, str]]:
    rows = db.execute("SELECT id::text, email, name, role FROM users").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_csv_mapping(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed(db, 1000)
    lines = ["User ID,Email Address,Full Name,role,Since,Notes"]
    for i in range(ROWS):  # 0-999 update seeded rows, 1000-2199 are new
        email = "not-an-email" if i % 500 == 7 else f"u{i}@example.com"
        lines.append(f"{uid(i)},{email},{'' if i % 700 == 3 else f'M{i}'},admin,{CREATED},x")
    lines.append(f"{uid(5000)},u1@example.com,Dup,admin,{CREATED},x")  # email of row 1
    job = run(service, ("\n".join(lines) + "\n").encode(), "people.csv", mapping=MAPPING)
    assert job["status"] == "completed", job
    bad_email = [i for i in range(ROWS) if i % 500 == 7]
    no_name = [i for i in range(ROWS) if i % 700 == 3]
    assert job["failed"] == len(bad_email) + len(no_name) + 1
    assert job["successful"] == ROWS - len(bad_email) - len(no_name)
    assert (job["inserted_records"], job["updated_records"]) == (
        1200 - sum(1 for i in bad_email + no_name if i >= 1000),
        1000 - sum(1 for i in bad_email + no_name if i < 1000),
    )
    got = [(e["row"], e["line"], e["field"], e["code"]) for e in report(service, job["job_id"])]
    assert got == sorted(
        [(i + 1, i + 2, "Email Address", "invalid_format") for i in bad_email]
        + [(i + 1, i + 2, "Full Name", "required") for i in no_name]
        + [(ROWS + 1, ROWS + 2, "Email Address", "duplicate_in_file")]
    )
    messages = {(e["field"], e["message"]) for e in report(service, job["job_id"])}
    assert ("Email Address", "email is not a valid email address") in messages  # and the field
    assert job["warnings"] == ["ignored unknown column(s): Notes"]
    assert job["options"] == {"mapping": MAPPING}
    rows = names(db)
    assert rows[uid(10)] == ("u10@example.com", "M10", "admin")
    assert rows[uid(1500)] == ("u1500@example.com", "M1500", "admin")
    assert rows[uid(7)] == ("u7@example.com", "N7", "editor")  # rejected: kept as it was


def test_ndjson_mapping(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed(db, 2)
    mapping = {"mail": "email", "who": "name", "since": "created_at"}
    common = {"role": "admin", "since": CREATED}
    records = [
        {"id": uid(0), "mail": "zero@example.com", "who": "Zero", **common},
        {"id": uid(1), "mail": "bad", "who": "One", **common},
        {"id": uid(2), "mail": "two@example.com", "who": 2, **common},
        {"id": uid(3), "mail": "3@example.com", "name": "Own name", **common, "extra": 1},
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    job = run(service, data, "people.ndjson", mapping=mapping)
    assert (job["successful"], job["failed"]) == (1, 3), job
    errors = report(service, job["job_id"])
    assert [(e["row"], e["field"], e["code"]) for e in errors] == [
        (2, "mail", "invalid_format"),
        (3, "who", "invalid_format"),
        # a mapped field is read from its source only: "name" is an unknown key here
        (4, "who", "required"),
    ]
    assert errors[1]["message"] == "name must be a JSON string; got a number"
    assert job["warnings"] == ["ignored unknown key(s): extra, name"]
    assert names(db)[uid(0)] == ("zero@example.com", "Zero", "admin")


def test_header_case_insensitive(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed(db, 2)
    body = f"ID,EMAIL,Name,Role,Created_At\n{uid(0)},bad,Zero,ADMIN,{CREATED}\n{uid(1)},one@example.com,One,viewer,{CREATED}\n"  # noqa: E501
    res = post(service, body.encode(), "a.csv")
    assert res.status_code == 202
    exact = service.wait(res.json()["job_id"])
    assert exact["status"] == "failed"
    assert "lacks required column(s): email, name, role, created_at" in exact["error"]
    job = run(service, body.encode(), "a.csv", header_case="insensitive")
    assert (job["successful"], job["failed"]) == (1, 1), job
    assert [(e["field"], e["code"]) for e in report(service, job["job_id"])] == [
        ("EMAIL", "invalid_format")
    ]
    assert job["options"] == {"header_case": "insensitive"}
    assert names(db)[uid(1)] == ("one@example.com", "One", "viewer")
    # mapping sources match case-insensitively too
    body = f"E-Mail,id,name,role,created_at\nzz@example.com,{uid(0)},Zed,admin,{CREATED}\n"
    job = run(
        service, body.encode(), "b.csv", header_case="insensitive", mapping={"e-mail": "email"}
    )
    assert (job["successful"], job["failed"]) == (1, 0), job
    assert names(db)[uid(0)][:2] == ("zz@example.com", "Zed")
    # two columns that differ only in case fail the file
    body = f"id,Email,EMAIL,name,role,created_at\n{uid(0)},a@b.co,c@d.co,N,admin,{CREATED}\n"
    job = run(service, body.encode(), "c.csv", header_case="insensitive")
    assert job["status"] == "failed"
    assert "'Email', 'EMAIL'" not in job["error"] and "Email, EMAIL" in job["error"], job["error"]


def test_header_case_insensitive_json_keys(service: Bulkio, db: psycopg.Connection[Any]) -> None:
    seed(db, 3)
    records = [
        b'{"ID": "%s", "Email": "a@example.com", "NAME": "A", "Role": "admin", "created_AT": "%s"}',
        # keys differing only in case within one record: the first one wins
        b'{"id": "%s", "Name": "First", "name": "Second", "email": "b@example.com", '
        b'"role": "admin", "created_at": "%s"}',
        b'{"id": "%s", "EMAIL": 5, "name": "C", "role": "admin", "created_at": "%s"}',
    ]
    data = b"\n".join(r % (uid(i).encode(), CREATED.encode()) for i, r in enumerate(records))
    job = run(service, data, "k.ndjson", header_case="insensitive")
    assert (job["successful"], job["failed"]) == (2, 1), job
    assert [(e["row"], e["field"], e["code"]) for e in report(service, job["job_id"])] == [
        (3, "email", "invalid_format")
    ]
    rows = names(db)
    assert rows[uid(0)] == ("a@example.com", "A", "admin")
    assert rows[uid(1)] == ("b@example.com", "First", "admin")


def test_missing_required_column_is_named_as_the_file_would(
    service: Bulkio, db: psycopg.Connection[Any]
) -> None:
    body = f"User ID,email,Full Name,role,Since\n{uid(0)},a@b.co,A,admin,{CREATED}\n"
    job = run(service, body.encode(), "m.csv", mapping=MAPPING)
    assert job["status"] == "failed"
    # the mapped field is read from its source only: the file's "email" column is not it
    assert "lacks required column(s): 'Email Address' (→ email); found: User ID" in job["error"]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"Phone": "phone"}, "'phone' is not a field of this resource"),
        ({"A": "email", "B": "email"}, "'A' and 'B' both map to 'email'"),
        ({"A": 5}, 'mapping entry "A": the field must be a string; got int'),
        ({"A" * 257: "email"}, "a source is at most 256 characters"),
        ({"": "email"}, "a source column name is empty"),
        ({"a\tb": "email"}, "must not hold control characters"),
        ("[1, 2]", "mapping must be a JSON object"),
        ("{not json", "mapping must be a JSON object"),
        ('{"A": "email", "A": "name"}', "the source 'A' appears twice"),
    ],
)
def test_a_bad_mapping_is_refused_at_once(
    service: Bulkio, db: psycopg.Connection[Any], mapping: Any, message: str
) -> None:
    res = post(service, b"id\n1\n", "x.csv", mapping=mapping)
    assert res.status_code == 400, res.text
    assert message in res.json()["detail"]
    raw = f"/v1/imports?resource=users&format=csv&mapping={json.dumps(mapping)}"
    if isinstance(mapping, str):
        raw = f"/v1/imports?resource=users&format=csv&mapping={mapping}"
    res = service.client.post(raw, content=b"id\n1\n")
    assert res.status_code == 400 and message in res.json()["detail"]
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_header_case_values_and_sources_differing_in_case(service: Bulkio) -> None:
    res = post(service, b"id\n1\n", "x.csv", header_case="lower")
    assert res.status_code == 400 and "header_case must be one of exact, insensitive" in res.text
    mapping = {"Mail": "email", "MAIL": "name"}
    assert post(service, b"id\n1\n", "x.csv", mapping=mapping).status_code == 202
    res = post(service, b"id\n1\n", "x.csv", mapping=mapping, header_case="insensitive")
    assert res.status_code == 400 and "differ only in case" in res.json()["detail"]


def test_mapping_is_part_of_the_idempotency_key(service: Bulkio) -> None:
    body = f"User ID,Email Address,Full Name,role,Since\n{uid(0)},a@b.co,A,admin,{CREATED}\n"

    def send(**form: Any) -> Any:
        fields = {"resource": "users", **{k: json.dumps(v) for k, v in form.items()}}
        return service.client.post(
            "/v1/imports", data=fields, files={"file": ("k.csv", body.encode())},
            headers={"Idempotency-Key": "mapped-1"},
        )  # fmt: skip

    first = send(mapping=MAPPING)
    assert first.status_code == 202
    same = send(mapping=dict(reversed(MAPPING.items())))  # the same mapping, another order
    assert same.status_code == 202 and same.headers["Idempotent-Replayed"] == "true"
    assert same.json()["job_id"] == first.json()["job_id"]
    assert send(mapping={**MAPPING, "role": "role"}).status_code == 422
    assert send().status_code == 422

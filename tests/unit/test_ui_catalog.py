"""api/ui.py: the data the web page's forms are built from, embedded in its HTML."""

from __future__ import annotations

import json
import re

import pytest

from api.ui import catalog_json
from engine.resources import catalog


def test_the_catalog_lists_every_resource_with_its_fields_and_filters() -> None:
    data = json.loads(catalog_json(catalog()))
    assert list(data["resources"]) == ["users", "articles", "comments"]
    users = data["resources"]["users"]
    assert users["fields"][:3] == ["id", "email", "name"]
    hints = {f["name"]: f["hint"] for f in users["filters"]}
    assert hints["ids"] == "ids, comma-separated"
    assert hints["role"] == "one of admin, author, editor, reader, viewer"
    assert hints["created_after"].startswith("a time")
    assert hints["active"] == "true or false"
    assert hints["email_domain"].startswith("a domain")
    assert {f["hint"] for f in data["resources"]["articles"]["filters"]} >= {"one tag", "an id"}
    assert data["modes"][0] == "upsert" and "validate_only" in data["modes"]
    assert {"csv", "ndjson", "json"} <= set(data["import_formats"])
    assert {"csv", "ndjson", "json", "parquet"} <= set(data["export_formats"])


@pytest.mark.parametrize(
    "role", ["</script><script>alert(1)</script>", "<!--", "a&b", "x>y", "\u2028"]
)
def test_no_value_can_end_the_script_element_early(role: str) -> None:
    text = catalog_json(catalog(("admin", role)))
    assert not re.search(r"[<>&]", text)
    assert role in json.loads(text)["resources"]["users"]["filters"][1]["hint"]

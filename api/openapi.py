"""What the OpenAPI document says that Litestar cannot infer from the handlers' signatures.

* ``operation(...)``: an ``operation_class`` for a handler whose credential is not the bearer
  token, whose body the handler streams itself (imports), or whose 200 is a file in one of
  several media types (exports, error reports).
* ``describe_exports(...)``: export requests per resource, derived from the catalog once the
  settings are known (user roles are configurable). OpenAPI cannot tie a query parameter to the
  value of another, so ``GET /v1/exports`` lists each resource's fields and filters in its
  description, while the ``POST`` body is a ``oneOf`` with one object per resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from litestar.openapi.spec import (
    Encoding,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from engine.exports.query import COMPRESSIONS, FALSE_VALUES, FORMATS, TRUE_VALUES
from engine.formats import COMPRESSED_MEDIA_TYPES, MEDIA_TYPES
from engine.resources import Filter, FilterOp, Kind, Resource

STRING, OBJECT, ARRAY = OpenAPIType.STRING, OpenAPIType.OBJECT, OpenAPIType.ARRAY
#: A string that is not blank once stripped (the API strips values) and holds no NUL.
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"
#: Media types of an export's body, by format; ``compression`` makes it a .gz or .zst file.
EXPORT_MEDIA = MEDIA_TYPES
#: Media types of an export written as a compressed file (``compression=gzip|zstd``).
COMPRESSED_MEDIA = tuple(COMPRESSED_MEDIA_TYPES.values())
#: Spellings of "no compression" the API accepts besides null.
NO_COMPRESSION = ("none", "identity")


def files(media_types: Sequence[str]) -> dict[str, OpenAPIMediaType]:
    """Response content for a file in any of ``media_types`` (JSON: an array of records)."""
    return {
        media: OpenAPIMediaType(
            schema=Schema(type=ARRAY, items=Schema(type=OBJECT))
            if media == "application/json"
            else Schema(type=STRING, format="binary")  # type: ignore[arg-type]
        )
        for media in media_types
    }


def operation(
    *,
    public: bool = False,
    request_body: RequestBody | None = None,
    content: Mapping[int, dict[str, OpenAPIMediaType]] | None = None,
) -> type[Operation]:
    """An ``operation_class`` that amends the generated operation: no bearer token (``public``,
    where ``security=[]`` on the handler would fall back to the global requirement), a documented
    body, and the media types of responses by status."""

    @dataclass
    class Amended(Operation):
        def __post_init__(self) -> None:
            if public:
                self.security = []
            if request_body is not None:
                self.request_body = request_body
            for status, media in (content or {}).items():
                assert self.responses is not None
                self.responses[str(status)].content = media  # type: ignore[union-attr]

    return Amended


def event_stream_operation() -> type[Operation]:
    """``GET /v1/jobs/{id}/events``: its 200 is also ``text/event-stream``; 204 when a finished
    job has nothing more to stream; credentials are a bearer token *or* the signed URL's query
    parameters (``{}``: no Authorization header needed)."""

    @dataclass
    class Amended(Operation):
        def __post_init__(self) -> None:
            assert self.responses is not None
            ok = self.responses["200"]
            assert isinstance(ok, OpenAPIResponse) and ok.content is not None
            ok.content["text/event-stream"] = OpenAPIMediaType(
                schema=Schema(
                    type=STRING,
                    description="`id: <seq>`, `event: <type>`, `data: <event JSON>` per event",
                )
            )
            self.responses["204"] = OpenAPIResponse(
                description="Server-Sent Events: the job has ended and no event follows "
                "Last-Event-ID / after (an EventSource stops reconnecting)."
            )
            problem = self.responses["404"]
            assert isinstance(problem, OpenAPIResponse)
            self.responses["503"] = OpenAPIResponse(
                description="This API process serves as many event streams as it can; see "
                "Retry-After.",
                content=problem.content,
            )
            forbidden = self.responses["403"]
            assert isinstance(forbidden, OpenAPIResponse)
            forbidden.description = (
                "The token lacks the scope to read this job, or the signed URL is invalid or "
                "has expired."
            )
            self.security = [{"bearer": []}, {}]

    return Amended


def import_body(
    resources: Sequence[str], formats: Sequence[str], modes: Sequence[str]
) -> RequestBody:
    form = Schema(
        type=OBJECT,
        required=["file", "resource"],
        properties={
            "file": Schema(
                type=STRING,
                format="binary",  # type: ignore[arg-type]
                min_length=1,
                description="The records; an empty file is refused. CSV and JSON may be gzip- or "
                "zstd-compressed (told by their first bytes); Parquet never is.",
            ),
            "resource": Schema(type=STRING, enum=list(resources)),
            "format": Schema(
                type=STRING,
                enum=list(formats),
                description="Default: from the file name's extension (`.gz`, `.zst` looked "
                "through); else `parquet` for a file starting with `PAR1`.",
            ),
            "mode": Schema(
                type=STRING,
                enum=list(modes),
                default=modes[0],
                description="`upsert`: a record replaces a matched row's fields; `insert`: an "
                "existing key is an error; `merge`: a record updates only the fields it holds "
                "(CSV: the header's columns; JSON: each record's keys, `null` included), and "
                "required fields are required only of records that create a row; "
                "`validate_only`: the full report, nothing written.",
            ),
            "max_errors": Schema(
                type=OpenAPIType.INTEGER,
                minimum=0,
                maximum=2**63 - 1,
                description="Stop the job (as `failed`) once more records than this have "
                "failed. Checked after each batch: the batch that passes the limit and the ones "
                "before it stay committed. Default: no limit.",
            ),
            "mapping": Schema(
                type=OBJECT,
                property_names=Schema(type=STRING, min_length=1, max_length=256),
                additional_properties=Schema(type=STRING),
                description="File column (CSV) or key (NDJSON, JSON) → field, e.g. "
                '`{"Email Address": "email"}`: a JSON object (in a form field or query '
                "parameter: its JSON text, at most 16 KiB). A source feeds only its field; other "
                "fields are read from columns of their own names; other columns are ignored "
                "(listed in `warnings`). Error rows name the file's column in `field`. 400 "
                "names a bad entry: an unknown field, two sources for one field, a value that is "
                "not a string, a source that is empty, longer than 256 characters or holds "
                "control characters.",
            ),
            "header_case": Schema(
                type=STRING,
                enum=["exact", "insensitive"],
                default="exact",
                description="`insensitive`: column names, keys and mapping sources match with "
                "ASCII letters compared case-insensitively (`Email` is `email`).",
            ),
        },
    )
    # The file name is how the format is told when `format` is absent.
    disposition = OpenAPIHeader(
        schema=Schema(type=STRING), example='form-data; name="file"; filename="records.csv"'
    )
    return RequestBody(
        required=True,
        content={
            "multipart/form-data": OpenAPIMediaType(
                schema=form,
                encoding={"file": Encoding(headers={"Content-Disposition": disposition})},
            ),
            "application/json": OpenAPIMediaType(
                schema=Schema(one_of=[_upload_import(form), _url_import(form)])
            ),
        },
    )


def _upload_import(form: Schema) -> Schema:
    """The JSON import of an upload session: the form's fields, ``upload_id`` for ``file``."""
    assert form.properties is not None
    fields = {name: value for name, value in form.properties.items() if name != "file"}
    upload_id = Schema(
        type=STRING,
        format="uuid",  # type: ignore[arg-type]
        description="A completed upload session of this token's owner (POST /v1/uploads); it "
        "is imported once. Also accepted as a form field of multipart/form-data, without "
        "`file`.",
    )
    return Schema(
        type=OBJECT,
        title="Import of an upload",
        required=["upload_id", "resource"],
        additional_properties=False,
        properties={"upload_id": upload_id, **fields},
    )


def _url_import(form: Schema) -> Schema:
    """The JSON import from a URL: the form's fields, ``source_url`` for ``file``."""
    assert form.properties is not None
    fields = {name: value for name, value in form.properties.items() if name != "file"}
    url = Schema(
        type=STRING,
        format="uri",  # type: ignore[arg-type]
        min_length=1,
        max_length=8192,
        description="A worker fetches the file from here into storage, then imports it. "
        "`https` only, and only to public addresses, checked now and again when fetched, each "
        "redirect too (at most 5): else 400 with a `reason` (BULKIO_URL_IMPORT_ALLOW_PRIVATE "
        "lifts this for development). The format is `format`, else the URL path's extension, "
        "else the answer's Content-Type (the job shows `auto` until then). Also accepted as a "
        "form field of multipart/form-data or a query parameter, without a file.",
    )
    return Schema(
        type=OBJECT,
        title="Import from a URL",
        required=["source_url", "resource"],
        additional_properties=False,
        properties={"source_url": url, **fields},
    )


def describe_uploads(openapi: OpenAPI, max_upload_bytes: int) -> None:
    """An upload's ``size`` is at most BULKIO_MAX_UPLOAD_BYTES (a setting, so not in the
    struct); its request bodies refuse unknown members (``forbid_unknown_fields``)."""
    assert openapi.components is not None and openapi.components.schemas is not None
    for name in ("UploadCreate", "UploadComplete", "PartDone"):
        openapi.components.schemas[name].additional_properties = False
    create = openapi.components.schemas["UploadCreate"]
    assert create.properties is not None
    size = create.properties["size"]
    assert isinstance(size, Schema)
    size.maximum = max_upload_bytes


def _filter_schema(resource: Resource, flt: Filter) -> Schema:
    column = resource.column(flt.column)
    if column.kind is Kind.UUID:
        value = Schema(type=STRING, format="uuid")  # type: ignore[arg-type]
    elif column.kind is Kind.TIMESTAMP:
        value = Schema(type=STRING, format="date-time")  # type: ignore[arg-type]
    elif column.kind is Kind.ENUM:
        value = Schema(type=STRING, enum=list(column.choices))
    elif column.kind is Kind.BOOL:
        return Schema(
            one_of=[
                Schema(type=OpenAPIType.BOOLEAN),
                Schema(type=STRING, enum=[*TRUE_VALUES, *FALSE_VALUES]),
            ]
        )
    else:
        value = Schema(type=STRING, pattern=NOT_BLANK)
    if flt.op is FilterOp.IN:
        return Schema(
            type=ARRAY,
            items=value,
            min_items=1,
            description="A list; `a,b,c` or a JSON array in a query string.",
        )
    return value


def export_request(resource: Resource) -> Schema:
    nullable_string = [STRING, OpenAPIType.NULL]
    return Schema(
        type=OBJECT,
        title=f"Export of {resource.name}",
        required=["resource"],
        additional_properties=False,
        properties={
            "resource": Schema(type=STRING, enum=[resource.name]),
            "format": Schema(type=STRING, enum=list(FORMATS), default="ndjson"),
            "fields": Schema(
                type=[ARRAY, OpenAPIType.NULL],
                items=Schema(type=STRING, enum=list(resource.column_names)),
                unique_items=True,
                description="Columns, in this order; default: all.",
            ),
            "filters": Schema(
                type=[OBJECT, OpenAPIType.NULL],
                additional_properties=False,
                properties={f.name: _filter_schema(resource, f) for f in resource.filters},
            ),
            "compression": Schema(
                type=nullable_string, enum=[*COMPRESSIONS, *NO_COMPRESSION, None]
            ),
            "formula_guard": Schema(
                type=[OpenAPIType.BOOLEAN, OpenAPIType.NULL],
                description="CSV: neutralise cells starting with = + - @ tab CR "
                "(default BULKIO_CSV_FORMULA_GUARD).",
            ),
        },
    )


def _query_help(catalog: Mapping[str, Resource]) -> str:
    lines = ["", "", "Fields (`fields=a,b`) and filters (`name=value`) by resource:", ""]
    for res in catalog.values():
        filters = ", ".join(f"`{f.name}`" for f in res.filters)
        lines.append(f"* `{res.name}`: fields {', '.join(res.column_names)}; filters {filters}")
    return "\n".join(lines)


def describe_exports(openapi: OpenAPI, catalog: Mapping[str, Resource]) -> None:
    """Per-resource export requests, from the catalog (see the module docstring)."""
    assert openapi.paths is not None
    path = openapi.paths["/v1/exports"]
    assert path.get is not None and path.post is not None
    path.get.description = (path.get.description or "") + _query_help(catalog)
    path.post.request_body = RequestBody(
        required=True,
        content={
            "application/json": OpenAPIMediaType(
                schema=Schema(one_of=[export_request(res) for res in catalog.values()])
            )
        },
    )

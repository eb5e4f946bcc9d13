"""The export pipeline: ``query`` (a validated request → one parameterised snapshot query read as
Arrow batches, and the ``Encoded`` stream), ``writers`` (batches → CSV, NDJSON, JSON or Parquet
bytes), ``compress`` (gzip, zstd) and ``run`` (export jobs into object storage, run by the
worker). The API streams exports through ``query`` and ``writers``; ``run`` is the worker's.
"""

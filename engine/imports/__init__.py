"""The import pipeline: a stored file → Arrow batches → validated rows → PostgreSQL, one
transaction per batch.

``run`` (the job runner, from the job's checkpoint on) → ``engine.formats.reader`` (batches) →
``validate`` (vectorised rules) → ``load`` (one batch's transaction: staging COPY, ``merge_sql``'s
set-based classification and upsert, error rows, the checkpoint) with ``references`` (set-based
foreign-key checks) and ``fetch`` (a ``source_url``'s file into storage first). Only the worker
loads this package; the API never does (tests/unit/test_layout.py).
"""

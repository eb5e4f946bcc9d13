"""What the test suites and the benchmarks share (importable as ``tests.support``; pytest puts the
project root on ``sys.path`` through ``pythonpath`` in pyproject.toml).

* ``servers``    throwaway PostgreSQL, Redis and moto S3, and their session fixtures;
* ``processes``  the one wrapper of a child process with its output in a log file;
* ``waits``      the one wait-until loop;
* ``database``   a migrated test database and the ``database_url`` / ``db`` fixtures;
* ``service``    a running bulkio (granian API + worker processes) and API tokens;
* ``datafiles``  generated import files (``testdata/generate.py``);
* ``handmade``   a few users records written by hand, byte for byte;
* ``readers``    ``read_batches`` over bytes in memory, for the reader tests;
* ``faults``, ``sse``, ``cli``, ``uploads``: fault injection on real connections, a small
  Server-Sent Events client, running the ``bulkio`` client, upload-session helpers.
"""

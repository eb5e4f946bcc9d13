"""bulkio's tests: unit (no servers), integration (real servers), browser; shared in support/."""

"""Live views: view definitions and their filters (compiled to SQL and to an
in-memory predicate that agree), pages and counts from the database, windows kept
exact by the bus and shared by every subscriber of the same view and size, catch-up
from the database when the bus lost news, and the fan-out of deltas. Knows nothing of
HTTP: subscribers are anything with a `send` of encoded frames. May import: `tenants`,
`ingest`, `bus`, `wire`, `storage`, `core`, the machine."""

"""Events in: each request's events through the state machine, stored with the rows
and the event log in one transaction, then news of the committed rows on the bus.
The only writer of conversations. May import: `bus`, `wire`, `storage`, `core`, the
machine."""

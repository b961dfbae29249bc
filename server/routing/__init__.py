"""Routing: the built-in router (one process routes a tenant at a time), agents'
presence and connections across processes, popups, durable timers, the wallboard,
and agents' answers to offers. Every decision goes through ingest as an event. May
import: `tenants`, `ingest`, `bus`, `wire`, `storage`, `core`, the machine."""

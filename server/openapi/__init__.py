"""The OpenAPI document of the HTTP API and the websocket's frames, built from what the
server itself uses: event types, columns, filters' fields and operators, and the field
objects the services read request bodies and frames with. May import: `providers`
and what it may."""

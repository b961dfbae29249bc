"""Switchboard's server: everything with I/O, in packages by concern.

From the bottom up (a package imports only those below it; import-linter holds it):

    core       the clock, settings, refusals, request fields, tokens, text, logs, metrics
    storage    the database: engine, schema, migrations, thin repositories
    wire       rows and frames as clients see them, and the websocket protocol declared
    bus        news of committed changes between processes (memory://, redis://)
    ingest     events in: through the state machine, one transaction, news after commit
    tenants    tenants, their time zones and settings
    live       view definitions, filters, pages, live windows, catch-up, fan-out
    routing    the built-in router, presence, popups, durable timers, the wallboard
    providers  provider glue: webhooks in, initiate, replies, recordings, web chat, sandbox
    openapi    the OpenAPI document (the websocket's frames in it too)
    edge       HTTP and websocket: routes, authentication, errors as HTTP, pages;
               docs/api.md written from them all
    demo       the demo tenant and its simulated traffic
    app        the composition root; serve and cli run it

docs/architecture.md tells how an event and a subscription flow through them.
"""

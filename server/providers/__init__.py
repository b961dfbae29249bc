"""Provider glue: a tenant's providers and their adapters (channels/), what they
report delivered into ingest, click-to-initiate, a conversation's agent's replies and
hangups, recordings, the web chat's visitors and the sandbox that runs in the server.
Adapters translate; the rules stay in the state machine. May import: `routing`,
`live` and what they may, and `channels`."""

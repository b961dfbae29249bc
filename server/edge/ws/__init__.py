"""The websocket side of the edge: `/ws` and `/webchat/{tenant}` on one connection core
(session.py), spoken by our own uvicorn protocol (protocol.py); docs/websocket-server.md
says why."""

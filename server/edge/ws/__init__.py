"""The websocket side of the edge: `/ws` (views, popups, wallboards, agents' actions)
and `/webchat/{tenant}` on one connection core (session.py), with their frames'
handlers, spoken by our own uvicorn protocol (protocol.py); docs/websocket-server.md
says why."""

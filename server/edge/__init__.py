"""The HTTP and websocket edge: every route (routes.py), bodies and authentication,
refusals turned into HTTP statuses (errors.py, the only place that knows them), the
pages, and the websocket endpoints. Handlers are thin: they read the request, call a
service and answer. The only package that knows Starlette and HTTP statuses. May
import: `openapi` and what it may."""

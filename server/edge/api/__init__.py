"""The HTTP API's handlers, one module per resource."""

"""The OpenAPI document of the HTTP API, built from the tables the server itself uses
(event types, columns, filters' fields and operators, validators' bounds)."""

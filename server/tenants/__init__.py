"""Tenants: creating one, each tenant's time zone, and its settings, teams and agents
(validated, stored, announced on the bus). May import: `bus`, `wire`, `storage`,
`core`."""

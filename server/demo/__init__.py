"""The demo of `switchboard serve --demo`: a tenant seeded with teams, agents and
views, and simulated traffic, agents and visitors acting through the same services a
real one's requests use (docs/demo.md). May import: `edge` and what it may."""

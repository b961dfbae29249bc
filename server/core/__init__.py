"""What every package may use and that uses no other package of ours: the clock,
settings, refusals (`Refused`), tokens and roles, text folding, structured logs,
metrics and test-only fault hooks. May import: nothing of ours."""

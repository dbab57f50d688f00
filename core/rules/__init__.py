"""The trading rules: signal gates, risk limits, protections, the basket router's trigger, the tier scheduler
and its token buckets. Each takes plain values (settings, parameters, an account state, a key store) and
returns a decision; none of them knows the engine."""

"""The trading rules the engine applies: signal gates, risk limits, protections, the basket router's trigger, the
tier scheduler and its token buckets. Each works on the values and stores it is given; none of them knows the
engine."""

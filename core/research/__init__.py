"""Judging a configuration: the replay driver and sweeps (``replay``; command line: ``python -m core.research``),
walk-forward, saved runs, benchmarks and the paper-evaluation verdict (``evaluation``). The figures they report
(a run's research metrics, the rules §11 KPIs) are ``core.metrics``."""

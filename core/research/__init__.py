"""Judging a configuration: the replay driver and sweeps (``replay``; command line: ``python -m core.research``),
research metrics of a run (``metrics``), the rules §11 KPIs over any window (``kpi``) and the paper-evaluation
verdict (``evaluation``)."""

"""Pure figures, computed from plain values or read from the store, for the rules, the pages' views and research:
figures of series (``figures``: drawdown, Sharpe, Sortino, daily returns, trade metrics, flip-flops and the n/a
rule of annualised figures), the rules §11 KPIs over any window (``kpi``), a run's research metrics
(``performance``), LLM usage (``llm_usage``) and how a figure is shown (``display``). Nothing here imports a
layer above ``core.venues``."""

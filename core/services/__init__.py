"""Outside services the engine talks to, each optional: the LLM gate (``llm``), SEC EDGAR filings
(``edgar``), Slack notifications (``slack``) and Redis (``redis_link``, ``redis_kv``, ``redis_buckets``,
``redis_stream``), whose backends fall back to the embedded ones while Redis is down."""

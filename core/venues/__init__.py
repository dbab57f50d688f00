"""Where orders go and bars come from: the two ports (``broker``, ``marketdata``) and their adapters, the
simulated ones in ``sim/`` (broker, synthetic market, bar files) and Alpaca's in ``alpaca/``."""

"""Alpaca through alpaca-py: the trading adapter (orders, fills, account) and 1-minute bars."""

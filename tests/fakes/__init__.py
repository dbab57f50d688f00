"""Test doubles that speak real wire protocols (see ``alpaca_server``)."""

"""Sensor models of a simulated city, publishing through the gateway package.

May import ``gateway`` (the wire contract and kind catalog); never ``services``.
"""

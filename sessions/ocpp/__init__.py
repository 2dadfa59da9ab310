"""evpay as an OCPP 1.6J / 2.0.1 central system: the server (server.py), what chargers'
reports do to sessions (reports.py) and the database command queue (commands.py)."""

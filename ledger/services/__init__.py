"""The use cases: publish, sync, scan, repair, restore, import and history, over the ports.

Each module is one use case. They reach the store, the index and the clock only through the
interfaces in :mod:`ledger.ports`; the adapters behind them are chosen in :mod:`ledger.bootstrap`.
"""

"""Store adapters: the event store's recorders (with the hash chain) and plain SQL connections.

These are the only modules that talk to sqlite3 and psycopg directly.
"""

"""The edges: the store (SQLite, PostgreSQL), the git index, the sparse index (a folder or an
S3-compatible bucket behind HTTP), metrics exposition, data files.

The only modules that import sqlite3, psycopg, pygit2, boto3 or prometheus_client. Each
implements a port of :mod:`ledger.ports`, or reads files the use cases are handed as plain values.
"""

"""Test doubles the ledger's own tests, scripts and demos run against."""

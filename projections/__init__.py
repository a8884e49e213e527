"""Views rebuilt from the ledger's events: database, index, queue and consistency."""

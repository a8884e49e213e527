"""``ledger serve``: cargo's registry web API over the ledger (``app``), run on waitress (``server``)."""

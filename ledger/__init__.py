"""ledger: an event-sourced publication ledger for package registries."""

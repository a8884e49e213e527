"""The ways in: the command line and the demo. Each parses, makes one call, and renders."""

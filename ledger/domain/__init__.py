"""The domain: the rules of names, versions, index lines and crate files, and the aggregates.

Pure code: nothing here reads a file, opens a connection or knows of SQL, git or the CLI.
"""

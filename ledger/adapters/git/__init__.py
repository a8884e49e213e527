"""The git index: a bare local clone written with pygit2, pushed, and read back."""

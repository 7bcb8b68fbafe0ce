"""The `cardiacfl` command line."""

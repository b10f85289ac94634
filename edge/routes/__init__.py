"""One module per route group, each with its ``routes`` list (composed in ``edge.api.app``)."""

"""Who may do what: named API keys with scopes (``keys``), dashboard users with roles, and the
scopes and roles themselves (``scopes``)."""

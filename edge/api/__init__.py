"""The HTTP app (``create_app``) and what every route shares: keys, CORS, limits, answers."""

"""The OpenAPI document of every endpoint (``/openapi.json``): operations, bodies, answers."""

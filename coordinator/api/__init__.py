"""REST API routers (thin: parse, authorise, call a logic module, serialise)."""

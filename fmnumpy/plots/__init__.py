"""Pictures (an edge: nothing in the core or the families imports it)."""

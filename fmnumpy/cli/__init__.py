"""The ``fmnumpy`` command: the parser and one module per family (an edge: nothing in
the core or the families imports it)."""

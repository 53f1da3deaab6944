"""The problem zoo shared by the tests: one module per family (roots, minimisation, ...)."""

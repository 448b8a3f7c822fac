"""Built-in domains: ``mock`` (tiny, for tests), ``retail`` and ``airline`` (tau-bench compatible)."""

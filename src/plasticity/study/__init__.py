"""Studies: grids of runs described by one YAML, executed with caching and resume."""

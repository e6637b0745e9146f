"""End-to-end benchmark of solar_agents: ``benchmarks/run`` (see benchmarks/README.md)."""

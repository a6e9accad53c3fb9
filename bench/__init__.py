"""Benchmarks: ``python -m bench NAME [ARGS]`` runs ``bench.NAME.main(ARGS)``."""

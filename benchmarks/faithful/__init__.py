"""Side-by-side int8 benchmark pieces: the competing tools, the measurements, the table (see bench_faithful.py)."""

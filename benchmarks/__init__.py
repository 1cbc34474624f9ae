"""Performance measurements (not tests); each writes its section of docs/BENCHMARKS.md."""

"""Cross-backend benchmarking harness: measurement loop, fidelity metrics, power, result store, reports."""

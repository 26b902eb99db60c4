"""PNG plots (matplotlib, Agg): ensemble (history, histogram, correlator, configuration)."""

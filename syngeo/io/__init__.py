"""Input layer: read uploaded weight data (see `syngeo.io.weights`); large arrays in flat
memory (`syngeo.io.arrays`)."""

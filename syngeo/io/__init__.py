"""Input layer: read uploaded weight data (see `syngeo.io.weights`)."""

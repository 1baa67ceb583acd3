"""Eigenspectra of representations and weights (thesis ch. 4, α-ReQ; ch. 6, small projectors
and multiple views): covariance eigenspectra (``eigenspectrum``), power-law fits with their
uncertainty and quality checks (``fits``), per-layer weight spectra against the
Marchenko–Pastur bulk (``weights``) and the self-supervised testbed (``ssl``)."""

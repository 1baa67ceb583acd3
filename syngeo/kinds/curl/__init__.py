"""Experiment kinds of curl descent (Ninou, Kadmon & Cayco-Gajic): the analytical stability
boundaries (``stability``), simulated phase diagrams (``phase_diagram``) and the order
parameter q (``order_parameter``)."""

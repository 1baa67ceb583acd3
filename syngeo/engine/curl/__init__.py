"""Curl descent (Ninou, Kadmon & Cayco-Gajic): non-gradient learning with sign-diverse
plasticity in a student–teacher network — the batched simulator (``simulator``) and the
stability theory of its solution manifold (``stability``)."""

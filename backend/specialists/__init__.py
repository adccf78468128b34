"""Specialists: the small models of the ensemble, one family per module behind `base.Specialist`.

Families are imported lazily by name (`registry.family`) so that the HTTP layer and the decision
core never pull in torch; only a process that actually loads an encoder or checkpoint pays for it.
"""

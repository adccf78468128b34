"""Specialists: the small models of the ensemble, one family per module behind `base.Specialist`.

Families are imported lazily by name (`registry.family`) so that the HTTP layer and the decision
core never pull in torch; only a process that actually loads an encoder or checkpoint pays for it.
"""

import os

# How long an OpenMP thread spins for more work before it sleeps; libgomp reads it once, as torch loads it, and torch
# is first imported under this package. libgomp's default kept torch's idle thread spinning on a core that request
# threads needed (41.5 vs 45.5 /s served at 70 /s offered on 2 cores), while a spin this short still bridges the gaps
# between one pass's operations (one tweet 6.7 ms; 8.9 ms at a tenth of it). Set GOMP_SPINCOUNT to choose another.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

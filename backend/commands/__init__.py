"""The command line and process wiring: `autoannotator serve|worker|train|prelabel|plan|...`, the WSGI app."""

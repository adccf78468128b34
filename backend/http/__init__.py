"""The HTTP face: Label Studio's ML-backend protocol and the team's page, over Flask. Handed a service; no torch."""

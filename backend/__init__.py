"""AutoAnnotator: a Label Studio ML backend. The package map is in docs/architecture.md."""

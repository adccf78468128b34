"""What answers /predict: bundles on disk (versioned, promoted atomically), ensembles loaded from them, the registry."""

"""charts/model-service: ``mlctl.yaml`` and an image become chart values, then manifests (offline)."""

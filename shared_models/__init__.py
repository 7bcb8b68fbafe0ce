"""The CardiacNets model, shared by the lab, the sites, `predict` and the dashboard: presets, `build_model`, the
one training loop, evaluation, metrics and checkpoints. No Flower, no Opacus; what travels between the lab and the
sites is in `protocol/`."""

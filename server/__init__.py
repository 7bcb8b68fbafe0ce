"""What runs at the coordinating lab inside Flower: the ServerApp, per-phase strategies, SecAgg+, the study
config and the reference panel."""

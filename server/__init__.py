"""Coordinating-lab side: the Flower ServerApp, study orchestration and the run database."""

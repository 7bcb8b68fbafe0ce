"""CardiacNets model code shared by the server, the clients, `predict` and the dashboard."""

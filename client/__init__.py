"""Hospital side: site configuration, ECG/CMR ingest, the on-site preprocessing cache and data checks.

Patient data is read here and never leaves the site; only model updates and aggregate metrics do.
"""

"""The site-data library: site config, WFDB ECG and DICOM/NIfTI CMR ingest, manifest, preprocessing cache,
data report and the torch dataset. No Flower: it is used by the hospital's ClientApp, by `cardiacfl data check`,
by centralized training and by the lab's reference panel.

Patient data is read here and never leaves the site; only model updates and aggregate metrics do.
"""

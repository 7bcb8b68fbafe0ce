"""What the lab and the sites agree on, and the narrow seams into Flower: the round contract (`round_contract`),
the metric contract (`site_metrics`), who took part (`participants`), the typed round record (`round_record`), the
one update codec (`codec`: wire format, part weights, checks), JSON that records hold (`jsonable`), the Flower seams
(`mask_prg`, `flower_timing`), which site a simulated node is (`simulated_site`) and /proc (`procfs`).
NumPy, cryptography and the standard library only: the thin ClientApp imports this room.
"""

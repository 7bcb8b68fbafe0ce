"""The overlap check before a study starts: its wire format (a Flower query message, answered by a site's mod).

The lab sends one query to every site with the fingerprints of its held-out panel and of its public ECGs
(sitedata/fingerprints.py); each site answers with one count per list. Lists travel as one comma-joined string
per list in a ConfigRecord.
"""

from __future__ import annotations

RECORD = "cardiacfl.overlap"  # the ConfigRecord of the query (its presence marks the message) and of the reply
SITE = "site"
LISTS = ("panel", "public")  # the held-out panel must not overlap any site; public data should not


def encode(fingerprints: dict[str, list[str]]) -> dict[str, str]:
    return {name: ",".join(fingerprints.get(name, [])) for name in LISTS}


def decode(record) -> dict[str, list[str]]:
    return {name: [f for f in str(record.get(name, "")).split(",") if f] for name in LISTS}

"""Before a study starts, the lab asks every site whether it holds any of the lab's own ECGs.

The lab sends the fingerprints of its held-out panel and its public training ECGs (its own data) in one Flower
query message per site (protocol/overlap_check.py); each site counts matches among its records, on site, and
answers with the counts only. A held-out panel that overlaps any site's data would score the model on records it
trained on: the study does not start. Public data a site also holds is reported (its records would count twice)
but does not stop the study. A site that does not answer in time is listed as unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flwr.common import ConfigRecord, Message, MessageType, RecordDict

from protocol import overlap_check
from sitedata.fingerprints import site_fingerprints


class PanelOverlap(RuntimeError):
    """The held-out panel shares records with a site's data."""


@dataclass
class OverlapResult:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # site -> {"panel": n, "public": m}
    unchecked: list[int] = field(default_factory=list)  # node ids that did not answer

    def sites_with(self, name: str) -> dict[str, int]:
        return {site: c[name] for site, c in self.counts.items() if c.get(name, 0) > 0}

    def summary(self) -> str:
        checked = ", ".join(f"{site} {c['panel']} panel / {c['public']} public" for site, c in sorted(self.counts.items()))
        return (f"overlap check: {checked or 'no site answered'}"
                + (f"; {len(self.unchecked)} node(s) did not answer" if self.unchecked else ""))


def lab_fingerprints(panel_site=None, public_sites=()) -> dict[str, list[str]]:
    """The lab's own fingerprints: its panel (a PreparedSite or None) and its public sites."""
    public = set().union(*(site_fingerprints(site) for site in public_sites)) if public_sites else set()
    return {"panel": sorted(site_fingerprints(panel_site)) if panel_site is not None else [], "public": sorted(public)}


def ask_sites(grid, fingerprints: dict[str, list[str]], timeout_s: float = 300.0) -> OverlapResult:
    """One query per connected node; its answers (sites name themselves in them)."""
    nodes = list(grid.get_node_ids())
    content = lambda: RecordDict({overlap_check.RECORD: ConfigRecord(overlap_check.encode(fingerprints))})  # noqa: E731
    messages = [Message(content(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
    result, answered = OverlapResult(), set()
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        if reply.has_error() or overlap_check.RECORD not in reply.content.config_records:
            continue
        record = reply.content.config_records[overlap_check.RECORD]
        result.counts[str(record[overlap_check.SITE])] = {name: int(record[name]) for name in overlap_check.LISTS}
        answered.add(reply.metadata.src_node_id)
    result.unchecked = [node for node in nodes if node not in answered]
    return result


def refuse_panel_overlap(result: OverlapResult) -> None:
    overlapping = result.sites_with("panel")
    if overlapping:
        named = ", ".join(f"{site} holds {n}" for site, n in sorted(overlapping.items()))
        raise PanelOverlap(f"the held-out panel overlaps site data ({named} of its ECGs): held-out figures would "
                           "score records a site trains on; the study does not start")

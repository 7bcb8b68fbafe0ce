"""Who each reply came from, study-wide: the phases' strategies share one roster.

Site identity comes from the node a reply arrived on: `node_sites` maps each SuperNode's id (fixed when the lab
registered the site's key) to the site's name. A reply whose self-reported name disagrees is dropped. Without a
registry (insecure runs, simulation) the self-reported name is all there is.
"""

from __future__ import annotations

from protocol.site_metrics import MetricKey as K


class SiteRoster:
    def __init__(self, node_sites: dict[int, str] | None = None, last_epsilon: dict[str, float] | None = None):
        self.node_sites = dict(node_sites or {})
        self.node_site: dict[int, str] = dict(self.node_sites)
        self.declined_sites: dict[str, str] = {}  # site -> reason: not asked to train again; they still evaluate
        self.last_epsilon = dict(last_epsilon or {})  # across studies: a site's lifetime ε never goes down

    def identify(self, node_id: int, metrics: dict) -> tuple[str, str | None]:
        """(the site a reply came from, why it must be dropped or None)."""
        claimed = str(metrics.get(K.SITE, ""))
        if not self.node_sites:
            site = claimed or f"node-{node_id}"
            self.node_site[node_id] = site
            return site, None
        site = self.node_sites.get(node_id)
        if site is None:
            return self.site_of(node_id), f"node {node_id} is not a registered site"
        if claimed and claimed != site:
            return site, f"reply claims to be {claimed!r} but came from {site!r}'s node"
        return site, None

    def site_of(self, node_id: int) -> str:
        """The name a node's replies are recorded under: its site, or `node-<id>` for a node no site owns."""
        return self.node_site.get(node_id, f"node-{node_id}")

    def declined(self, site: str, reason: str) -> None:
        self.declined_sites[site] = reason

    def has_declined(self, node_id: int) -> bool:
        return self.node_site.get(node_id) in self.declined_sites

    def epsilon_flags(self, site: str, metrics: dict) -> str | None:
        """Remember the site's lifetime ε; a value lower than before means its ledger was reset or replaced."""
        epsilon = metrics.get(K.EPSILON)
        if not isinstance(epsilon, (int, float)):
            return None
        before = self.last_epsilon.get(site)
        self.last_epsilon[site] = float(epsilon)
        if before is not None and epsilon < before - 1e-9:
            return f"lifetime ε went down from {before:.3f} to {epsilon:.3f}: the site's ledger was reset or replaced"
        return None

"""The site's own privacy policy against what a round asks. The site config owns the policy: nothing the
server sends can lower the site's protection, so a round that asks for less is declined with a reason."""

from __future__ import annotations

from sitedata.site_config import SiteConfig
from protocol.round_contract import RoundConfig


def policy_refusal(rc: RoundConfig, config: SiteConfig) -> str | None:
    """None when the round may run under this site's policy, else the reason it is declined."""
    privacy, training = config.privacy, config.training
    if not rc.dp and privacy.required:
        return "round asks to train without DP; this site requires DP ([privacy] required = true)"
    if rc.max_grad_norm > privacy.max_grad_norm:
        return (f"round asks for clipping norm {rc.max_grad_norm:g}; this site clips at "
                f"{privacy.max_grad_norm:g} (privacy.max_grad_norm)")
    if rc.target_epsilon > privacy.target_epsilon:
        return (f"round asks for a privacy budget of ε={rc.target_epsilon:g}; this site grants "
                f"ε={privacy.target_epsilon:g} (privacy.target_epsilon)")
    if rc.local_epochs > training.max_local_epochs:
        return (f"round asks for {rc.local_epochs} local epochs; this site allows at most "
                f"{training.max_local_epochs} (training.max_local_epochs)")
    return None

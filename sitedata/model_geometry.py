"""The one cross-check between a site's preprocessing and the model it feeds: the ECG rate and window and the
CMR frames and size a site config produces must be what the model preset takes. Checked at `data check` and at
the start of every round, so a mismatch is named at once instead of failing later inside the model."""

from __future__ import annotations

from sitedata.site_config import SiteConfig, SiteConfigError
from shared_models.config import CardiacNetsConfig, preset


def geometry_mismatches(config: SiteConfig, model: CardiacNetsConfig) -> list[tuple[str, object, object]]:
    """(site-config key, the site's value, the model's value) for every setting that disagrees."""
    pairs = [
        ("ecg.sampling_rate_hz", config.ecg.sampling_rate_hz, model.ecg.sampling_rate_hz),
        ("ecg.window_s", config.ecg.window_s, model.ecg.window_s),
    ]
    if "cmr" in config.modalities:
        pairs += [("cmr.frames", config.cmr.frames, model.cmr.frames),
                  ("cmr.image_size", config.cmr.image_size, model.cmr.image_size)]
    return [(key, site, wanted) for key, site, wanted in pairs if float(site) != float(wanted)]


def check_model_geometry(config: SiteConfig, model: CardiacNetsConfig | str) -> None:
    """Raise SiteConfigError naming the file, each key, the site's value and the model's."""
    model_config = preset(model) if isinstance(model, str) else model
    problems = geometry_mismatches(config, model_config)
    if problems:
        details = "; ".join(f"{key} = {site!r} but the model ({model_config.preset}) takes {wanted!r}"
                            for key, site, wanted in problems)
        raise SiteConfigError(f"{config.path}: {details}")

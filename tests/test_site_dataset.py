"""The torch Dataset over the cache: shapes, masks instead of silent zeros, batching across sites."""

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from sitedata.site_dataset import SiteDataset


def _site(cohort, name):
    return prepare_site(load_site_config(cohort / "site_configs" / f"{name}.toml"))


def test_items_carry_masks_and_pool_across_sites(tiny_cohort_template, tmp_path):
    import shutil

    cohort = tmp_path / "c"
    shutil.copytree(tiny_cohort_template, cohort)
    paired, ecg_only = _site(cohort, "hospital-a"), _site(cohort, "hospital-c")
    a, c = SiteDataset(paired), SiteDataset(ecg_only)
    assert len(a) == 8 and len(c) == 8
    item = a[0]
    assert item["ecg"].shape == (12, 5000) and item["cmr"].shape == (16, 64, 64) and item["has_cmr"]
    subject = paired.subjects[0]
    assert torch.equal(item["indicator_mask"], torch.from_numpy(np.isfinite(subject.indicators)))
    assert np.allclose(item["cmr"].numpy(), np.asarray(paired.cmr(subject)))

    only = c[0]
    assert not only["has_cmr"] and not only["indicator_mask"].any() and only["disease_mask"].all()

    batch = next(iter(DataLoader(ConcatDataset([a, c]), batch_size=16)))
    assert batch["ecg"].shape == (16, 12, 5000) and batch["has_cmr"].sum() == 8

    splits = {name: SiteDataset(paired, split=name) for name in ("train", "val", "test")}
    assert all(s.split == "train" for s in splits["train"].subjects)
    assert sum(len(d) for d in splits.values()) == len(a)

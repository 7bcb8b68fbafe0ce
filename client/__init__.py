"""What runs at a hospital inside Flower: the ClientApp, one site round, the site's privacy policy and metric
release rules, the Opacus privatizer and the site's lifetime privacy ledger (the only modules that import Opacus)."""

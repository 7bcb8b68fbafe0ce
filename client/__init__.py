"""What runs at a hospital inside Flower: the ClientApp, one site round, the Opacus privatizer (the only
Opacus importer) and the site's lifetime privacy ledger."""

"""OCT data: the embedded synthetic OCT generator and loaders for real OCT layouts."""

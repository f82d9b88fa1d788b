"""rpiboot-provision: provision boards over USB."""

"""Every rule of spec §5, vectorised: value parsing (normalize), ID checksum, row and cross-row rules."""

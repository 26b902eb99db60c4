"""Renormalisation group (DESIGN 1.7): blocking (R_b on the distributed lattice), inverse (the
learned transposed convolution)."""

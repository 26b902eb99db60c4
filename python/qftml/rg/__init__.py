"""Renormalisation group (DESIGN 1.7): blocking (R_b on the distributed lattice), inverse (the
learned transposed convolution), pipeline (the `qftml irg` run: direct chains, training,
upscaling, critical exponents, results file)."""

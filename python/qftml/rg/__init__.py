"""Renormalisation group (DESIGN 1.7): blocking (R_b on the distributed lattice), inverse (the
learned transposed convolution), refine (block-constrained refinement: the fine theory's
conditional given the block field, inverse Monte Carlo RG), pipeline (the `qftml irg` run: direct chains, training,
upscaling, critical exponents, results file)."""

"""Statistics: analysis (ensemble tables with Gamma-method errors), finite_size (reweighting in
mu2, Binder crossings, flow, FSS exponents)."""

"""Reweighting (DESIGN 1.4): estimator (the ratio estimator, ESS, average phase, errors), targets
(A given as S plus changes; A - S per configuration), driver (the `qftml reweight` run and its outputs)."""

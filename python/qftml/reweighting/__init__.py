"""Reweighting (DESIGN 1.4): estimator (the ratio estimator, ESS, average phase, errors), targets
(A given as S plus changes; A - S per configuration)."""

"""Files: ensembles (HDF5 schema, hyperslab writing, the Ensemble container), couplings
(/couplings/<family>), checkpoints (chains and trainers, atomic), history (per-epoch histories of
trainers), json_output (strict JSON, output stems)."""

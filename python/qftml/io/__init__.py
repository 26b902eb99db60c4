"""Files: ensembles (HDF5 schema, hyperslab writing, readers), couplings (/couplings/<family>),
checkpoints (chains and trainers, atomic), json_output (strict JSON)."""

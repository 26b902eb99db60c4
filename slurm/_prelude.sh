set -uo pipefail
# --- site set-up (verbatim from `--setup`: module loads, environment activation) ---
{{!setup}}
# --- values from the configuration: quoted literals, used only as "$VAR" below ---
QFTML={{qftml}}
MPIEXEC={{mpiexec}}
MPI={{mpi}}
LAUNCHER={{launcher}}
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
case "$LAUNCHER" in
  # pmi2: MPICH (also the pip wheel); pmix: Open MPI. A rank that dies takes the others with it.
  srun)   launch=(srun --mpi="$MPI" --kill-on-bad-exit=1) ;;
  mpirun) launch=("$MPIEXEC" -n "${SLURM_NTASKS:-1}") ;;    # the mpiexec of the MPI qftml was built with
esac
echo "qftml: job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+ task $SLURM_ARRAY_TASK_ID} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-?} ($(date -u +%FT%TZ))"

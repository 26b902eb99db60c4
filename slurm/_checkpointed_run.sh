# --- run; on a preemption/time-limit signal qftml checkpoints and exits with $PREEMPTED ---
PREEMPTED={{preempted_exit_code}}
RESUME_SUPPORTED={{resume_supported}}
ALWAYS_RESUME={{always_resume}}
resume=()
if [ -n "$RESUME_SUPPORTED" ]; then
  # A requeued job (SLURM_RESTART_COUNT > 0) continues the chain from its checkpoint.
  if [ -n "$ALWAYS_RESUME" ] || { [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && [ -e "$OUTPUT.ckpt" ]; }; then
    resume=(--resume)
  fi
fi
"${launch[@]}" "$QFTML" "$COMMAND" "$CONFIG" "${QUIET[@]}" "${SET_ARGS[@]}" "${resume[@]}"
status=$?
if [ "$status" -eq "$PREEMPTED" ]; then
  echo "qftml: $COMMAND stopped at a checkpoint after a signal; requeueing job $SLURM_JOB_ID"
  if scontrol requeue "$SLURM_JOB_ID"; then
    exit 0
  fi
  echo "qftml: requeue failed; resubmit with --resume to continue from $OUTPUT.ckpt" >&2
fi
exit "$status"

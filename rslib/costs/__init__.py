"""GPU-hours of a configured run: per-step costs measured on the job's device (:mod:`.measure`)
and scaled to the plan's jobs (:mod:`.estimate`, no torch)."""

"""Models: architectures with their input normalisation as the first layer
(:mod:`.architectures`), model files that say what they are (:mod:`.checkpoint`) and released
checkpoints of the reference repositories as model files (:mod:`.released`)."""

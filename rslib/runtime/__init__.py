"""What every stage needs to run as a job: atomic file output, one-line errors, progress lines,
provenance, per-stage versions, the job runner of the workflow scripts, and devices.

Torch-free except :mod:`rslib.runtime.devices`."""

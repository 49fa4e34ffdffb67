"""Datasets: the registry of what the workflow knows before a download (:mod:`.registry`,
torch-free), preparing them on disk (:mod:`.prepare`: download, verify, convert) and loading the
prepared splits (:mod:`.load`)."""

"""Robust training: the driver of one training job (:mod:`.driver`), the shared loop with its
resumable state (:mod:`.loop`), the L2 attacks (:mod:`.attacks`), noise copies (:mod:`.copies`),
training curves (:mod:`.curves`), the hyper-parameter keys of each method (:mod:`.hparams`,
torch-free) and one module per method (Gaussian, SmoothAdv, MACER, AdvMacer, Consistency,
SmoothMix), each a :class:`.base.TrainingMethod`."""

"""Certification of smoothed classifiers: the noise stream (:mod:`.noise`), Cohen et al.'s
``Smooth`` with PREDICT and CERTIFY (:mod:`.smooth`, its argument and image checks in
:mod:`.checks`), the certificate TSV (:mod:`.tsv`), sharded
certification and its exact merge (:mod:`.certify`), CertifyAdp and Soft-RS certification
(:mod:`.adaptive`), published certification logs (:mod:`.published_logs`) and the plausibility
check of an imported released checkpoint (:mod:`.plausibility`)."""

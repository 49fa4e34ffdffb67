"""What a reader sees: metrics over certificates (:mod:`.metrics`), booktabs LaTeX
(:mod:`.latex`), the paper's tables (:mod:`.tables`) and figures (:mod:`.figures`), the run's
summaries (:mod:`.summaries`), the paper-vs-reproduced comparison (:mod:`.comparison`) and the
end-of-run summary (:mod:`.run_summary`)."""

"""The steps of the export pipeline (:mod:`export.pipeline` orchestrates them)."""

"""The parts of ``sonoedge doctor`` (:mod:`export.doctor`): environment checks, GPU
validation, engine builds and the report."""
